package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/header"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show how far a conversion got and how to open the device (needs no keys)",
		ArgsUsage: "DEVICE",
		Flags: []cli.Flag{
			metadataFlag(),
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object"},
		},
		Action: func(c *cli.Context) error {
			dev, err := deviceArg(c)
			if err != nil {
				return err
			}
			if decryptRecorded(c.String("metadata")) {
				return statusDecrypt(c, dev)
			}
			if luksVolume(dev) != nil {
				return statusLUKS(c, dev)
			}
			// Not exclusive: status is for watching a running conversion
			// too. Nothing read here is authenticated (no keys), so it is
			// only ever displayed.
			t, cleanup, err := openTarget(dev, c.String("metadata"), 0, blockdev.Options{ReadOnly: true})
			if err != nil {
				return err
			}
			defer cleanup(false)
			if err := checkSizes(dev, c.String("metadata"), t); err != nil {
				return err
			}
			st, err := engine.ReadStatus(t)
			if err != nil {
				return fmt.Errorf("status %s: %w", dev, err)
			}
			rep := buildStatus(dev, c.String("metadata"), st)
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printStatus(c.App.Writer, rep)
			return nil
		},
	}
}

// statusReport is the --json schema of status; scripts read it, so fields
// are only ever added.
type statusReport struct {
	Device       string  `json:"device"`
	UUID         string  `json:"uuid"`
	State        string  `json:"state"`
	Mode         string  `json:"mode"`
	WindowsDone  uint64  `json:"windows_done"`
	WindowsTotal uint64  `json:"windows_total"`
	BytesDone    uint64  `json:"bytes_done"`
	BytesTotal   uint64  `json:"bytes_total"`
	WindowSize   uint64  `json:"window_size"`
	OpenWindow   *uint64 `json:"open_window"` // null when no window is in flight
	LogRecords   int     `json:"log_records"`
	// CryptoEngine is "userspace", "kernel", "userspace and kernel" or
	// "unknown" (a header from before cryptshift recorded it).
	CryptoEngine string       `json:"crypto_engine"`
	Old          sideReport   `json:"old"`
	New          sideReport   `json:"new"`
	Metadata     metaReport   `json:"metadata"`
	Copies       []copyReport `json:"header_copies"`
	Created      string       `json:"created"`
	Updated      string       `json:"updated"`
	Next         string       `json:"next"` // what to do now, in words
}

type sideReport struct {
	Cipher          string `json:"cipher"`
	KeyBits         uint32 `json:"key_bits"`
	SectorSize      uint32 `json:"sector_size"`
	IVOffset        uint64 `json:"iv_offset"`
	IVLargeSectors  bool   `json:"iv_large_sectors"`
	DataOffset      uint64 `json:"data_offset"`
	OpenCommand     string `json:"open_command"`
	CrypttabOptions string `json:"crypttab_options"`
	CrypttabNote    string `json:"crypttab_note,omitempty"`
}

type metaReport struct {
	Path         string `json:"path"`
	OnDevice     bool   `json:"on_device"`
	Offset       uint64 `json:"offset"`
	Size         uint64 `json:"size"`
	DigestOffset uint64 `json:"digest_table_offset"`
	LogOffset    uint64 `json:"log_offset"`
	LogSize      uint64 `json:"log_size"`
}

type copyReport struct {
	Slot   int    `json:"slot"`
	Status string `json:"status"`
}

func buildStatus(dev, metaPath string, st *engine.Status) statusReport {
	h := st.Header
	side := func(m header.Mapping, off uint64) sideReport {
		ct, note := crypttabOptions(m, off)
		return sideReport{Cipher: m.Cipher, KeyBits: m.KeyBytes * 8, SectorSize: m.SectorSize,
			IVOffset: m.IVOffset, IVLargeSectors: m.IVLargeSectors, DataOffset: off,
			OpenCommand: openCommand(dev, h, m, off), CrypttabOptions: ct, CrypttabNote: note}
	}
	r := statusReport{
		Device: dev, UUID: hex.EncodeToString(h.UUID[:]), State: st.State.String(), Mode: h.Mode.String(),
		WindowsDone: st.Done, WindowsTotal: st.Total,
		BytesDone: h.ConvertedBytes(st.Done), BytesTotal: h.DataSize,
		WindowSize: h.Window, OpenWindow: st.Open, LogRecords: st.Records, CryptoEngine: h.Engines.String(),
		Old: side(h.Old, h.OldOffset), New: side(h.New, h.NewOffset),
		Metadata: metaReport{Path: dev, OnDevice: metaPath == "", Offset: h.MetaOffset, Size: h.MetaSize,
			DigestOffset: h.DigestOff, LogOffset: h.LogOffset, LogSize: h.LogSize},
		Created: time.Unix(h.Created, 0).UTC().Format(time.RFC3339),
		Updated: time.Unix(h.Updated, 0).UTC().Format(time.RFC3339),
	}
	if metaPath != "" {
		r.Metadata.Path = metaPath
	}
	for i, c := range st.Copies {
		r.Copies = append(r.Copies, copyReport{Slot: i, Status: c})
	}
	switch {
	case st.State == header.StateComplete:
		r.Next = "nothing: the conversion is complete; open the device with the new mapping"
	case st.Open != nil:
		r.Next = fmt.Sprintf("window %d was in flight when the conversion stopped: run `cryptshift recover` (or convert again, which recovers first)", *st.Open)
	default:
		r.Next = "run the same `cryptshift convert` command again to resume; until it completes, the device is readable by neither mapping alone"
	}
	return r
}

func printStatus(w io.Writer, r statusReport) {
	pct := 100.0
	if r.BytesTotal > 0 {
		pct = 100 * float64(r.BytesDone) / float64(r.BytesTotal)
	}
	fmt.Fprintf(w, "Device:      %s\n", r.Device)
	fmt.Fprintf(w, "Conversion:  %s, %s resilience, started %s, updated %s\n", r.UUID, r.Mode, r.Created, r.Updated)
	fmt.Fprintf(w, "State:       %s: %d of %d windows (%s of %s, %.1f%%), window %s\n", r.State,
		r.WindowsDone, r.WindowsTotal, formatBytes(r.BytesDone), formatBytes(r.BytesTotal), pct, formatBytes(r.WindowSize))
	if r.OpenWindow != nil {
		fmt.Fprintf(w, "In flight:   window %d (needs recovery)\n", *r.OpenWindow)
	}
	fmt.Fprintf(w, "Crypto:      %s\n", cryptoEngineText(r.CryptoEngine))
	for _, s := range []struct {
		name string
		sr   sideReport
	}{{"Old", r.Old}, {"New", r.New}} {
		if s.sr.Cipher == "none" {
			// No key, no sectors of its own, no IVs: the JSON keeps the
			// fields (key_bits 0) for the scripts that read them.
			fmt.Fprintf(w, "%s mapping: plaintext (no encryption), data at byte %d\n", s.name, s.sr.DataOffset)
		} else {
			fmt.Fprintf(w, "%s mapping: %s, %d-bit key, sector size %d, iv offset %d", s.name, s.sr.Cipher, s.sr.KeyBits, s.sr.SectorSize, s.sr.IVOffset)
			if s.sr.IVLargeSectors {
				fmt.Fprint(w, ", iv_large_sectors")
			}
			fmt.Fprintf(w, ", data at byte %d\n", s.sr.DataOffset)
		}
		fmt.Fprintf(w, "  open:      %s\n", s.sr.OpenCommand)
		if s.sr.CrypttabOptions != "" {
			fmt.Fprintf(w, "  crypttab:  NAME %s KEYFILE %s\n", r.Device, s.sr.CrypttabOptions)
		} else {
			fmt.Fprintf(w, "  crypttab:  (%s)\n", s.sr.CrypttabNote)
		}
	}
	where := "end of the device"
	if !r.Metadata.OnDevice {
		where = "separate"
	}
	fmt.Fprintf(w, "Metadata:    %s (%s), bytes %d-%d\n", r.Metadata.Path, where, r.Metadata.Offset, r.Metadata.Offset+r.Metadata.Size-1)
	for _, c := range r.Copies {
		fmt.Fprintf(w, "Header %d:    %s\n", c.Slot, c.Status)
	}
	fmt.Fprintf(w, "Next:        %s\n", r.Next)
}

// cryptoEngineText says in words what ran the conversion's ciphers.
func cryptoEngineText(e string) string {
	switch e {
	case "userspace":
		return "userspace (cryptshift's own ciphers)"
	case "kernel":
		return "kernel (the kernel's dm-crypt, --crypto kernel or a spec without a userspace cipher)"
	case "userspace and kernel":
		return "userspace and kernel (the sides, or the runs, used different engines)"
	}
	return "unknown (the header is from a cryptshift that did not record it)"
}

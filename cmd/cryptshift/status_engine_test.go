package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/header"
)

// status names the engine the header records, in text and JSON, and a
// header without the field (zero) as unknown.
func TestStatusCryptoEngine(t *testing.T) {
	for _, tc := range []struct {
		e          header.Engines
		json, text string
	}{
		{0, "unknown", "Crypto:      unknown ("},
		{header.EngineUserspace, "userspace", "Crypto:      userspace ("},
		{header.EngineKernel, "kernel", "Crypto:      kernel ("},
		{header.EngineUserspace | header.EngineKernel, "userspace and kernel", "Crypto:      userspace and kernel ("},
	} {
		h := &header.Header{Mode: header.ModeJournal, State: header.StatePaused, Window: 1 << 20, DataSize: 4 << 20, MetaSize: 1 << 20,
			Engines: tc.e,
			Old:     header.Mapping{Cipher: "serpent-xts-plain64", KeyBytes: 64, SectorSize: 512},
			New:     header.Mapping{Cipher: "aes-xts-plain64", KeyBytes: 64, SectorSize: 512}}
		rep := buildStatus("/dev/x", "", &engine.Status{Header: h, Total: 4, State: h.State})
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m["crypto_engine"] != tc.json {
			t.Errorf("%v: crypto_engine %v, want %q", tc.e, m["crypto_engine"], tc.json)
		}
		var out bytes.Buffer
		printStatus(&out, rep)
		if !strings.Contains(out.String(), "\n"+tc.text) {
			t.Errorf("%v: text lacks %q:\n%s", tc.e, tc.text, out.String())
		}
	}
}

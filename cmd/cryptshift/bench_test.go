package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/bench"
)

// TestEndToEndBench runs the built binary as a user would and checks the
// JSON report's structure, and that every mode's conversion was verified
// against the original data (verifyBenchData is tested above to notice a
// single wrong bit).
func TestEndToEndBench(t *testing.T) {
	r := buildCLI(t)
	res := r.must(exitOK, nil, "bench", "--convert", "16M", "--repeat", "1", "--json",
		"--cipher", "aes-xts-plain64", "--cipher", "aes-cbc-essiv:sha256", "--time", "5ms", "--dir", r.dir)
	var rep bench.Report
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("bench --json output: %v\n%s", err, res.stdout)
	}
	if rep.Date == "" || rep.Machine.Cores < 1 || rep.Machine.CPU == "" || rep.Machine.LoadAtEnd == "" {
		t.Errorf("machine description incomplete: %+v, date %q", rep.Machine, rep.Date)
	}
	// Three key sizes, two sector sizes, two directions, for each spec.
	if len(rep.Ciphers) != 24 {
		t.Fatalf("%d cipher results, want 24", len(rep.Ciphers))
	}
	for _, c := range rep.Ciphers {
		xts := c.Spec == "aes-xts-plain64"
		if c.MBps <= 0 || c.WallMBps <= 0 || xts != (c.RefMBps > 0 && c.Ratio > 0) {
			t.Errorf("cipher result %+v", c)
		}
	}
	// Both sector sizes by default, each with every mode.
	if len(rep.Convert) != 2 {
		t.Fatalf("%d conversion reports, want one per default sector size (512, 4096)", len(rep.Convert))
	}
	for i, cv := range rep.Convert {
		if want := []int{512, 4096}[i]; cv.ImageSize != 16<<20 || cv.DataSize != 13<<20 || cv.Window != 1<<20 || cv.SectorSize != want || !cv.FlushedCopy {
			t.Errorf("report %d: want %d-byte sectors, the 16M layout and the flushed copy: %+v", i, want, cv)
		}
		if os.Geteuid() == 0 && !cv.CacheDropped {
			t.Errorf("root, but the page cache was not dropped: %s", cv.CacheNote)
		}
		var modes []string
		for _, m := range cv.Modes {
			modes = append(modes, m.Mode)
			if len(m.Runs) != 1 {
				t.Errorf("%s: %d runs, want 1", m.Mode, len(m.Runs))
				continue
			}
			run := m.Runs[0]
			if !run.Verified {
				t.Errorf("%s: conversion not verified", m.Mode)
			}
			if run.CopySeconds <= 0 || run.ConvertSeconds <= 0 || m.MedianRatio != run.Ratio || m.BestRatio != run.Ratio ||
				run.FlushedCopySeconds <= 0 || m.MedianFlushedRatio != run.FlushedRatio ||
				run.PeakRSSKiB <= 0 || run.MaxRSSKiB <= 0 || run.CPUSeconds <= 0 {
				t.Errorf("%s: run %+v, summary %+v", m.Mode, run, m)
			}
		}
		if !slices.Equal(modes, []string{"journal", "checksum", "shift", "none"}) {
			t.Errorf("modes %v", modes)
		}
	}
	left, _ := filepath.Glob(filepath.Join(r.dir, "cryptshift-bench-*"))
	if len(left) != 0 {
		t.Errorf("bench left %v behind", left)
	}

	// The table form names every mode and says that the data was checked.
	res = r.must(exitOK, nil, "bench", "--convert", "16M", "--repeat", "1", "--cipher", "none",
		"--mode", "checksum", "--mode", "shift", "--sector-size", "4096", "--flushed-copy=false", "--dir", r.dir)
	lines := strings.Split(res.stdout, "\n")
	var rows int
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 && (f[0] == "checksum" || f[0] == "shift") {
			rows++
			if f[len(f)-1] != "yes" {
				t.Errorf("row not verified: %q", l)
			}
		}
	}
	if rows != 2 || strings.Contains(res.stdout, "aes-xts-plain64  ") {
		t.Errorf("want the two mode rows and no cipher table:\n%s", res.stdout)
	}
}

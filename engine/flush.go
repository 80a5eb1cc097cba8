package engine

import (
	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
)

// FlushPoint names one flush of the crash argument. The names are those of
// the table in docs/DESIGN.md, "Flush points" (TestFlushPointsMatchDesign
// holds the two together), and Hooks.DropFlush takes them.
type FlushPoint string

const (
	FlushCreateDigestTable   FlushPoint = "create-digest-table"
	FlushHeaderCommit        FlushPoint = "header-commit"
	FlushJournalRecord       FlushPoint = "journal-record"
	FlushJournalData         FlushPoint = "journal-data"
	FlushChecksumRecord      FlushPoint = "checksum-record"
	FlushChecksumData        FlushPoint = "checksum-data"
	FlushWindowData          FlushPoint = "window-data"
	FlushProgressRecord      FlushPoint = "progress-record"
	FlushOnlineCommit        FlushPoint = "online-commit"
	FlushRecoverJournalData  FlushPoint = "recover-journal-data"
	FlushRecoverChecksumData FlushPoint = "recover-checksum-data"
	FlushAcceptDamage        FlushPoint = "accept-damage"
	FlushAcceptIdentity      FlushPoint = "accept-identity"
	FlushLUKSKeyslotMaterial FlushPoint = "luks-keyslot-material"
	FlushLUKSStartCommit     FlushPoint = "luks-start-commit"
	FlushLUKSFinalCommit     FlushPoint = "luks-final-commit"
	FlushLUKSKeyslotWipe     FlushPoint = "luks-keyslot-wipe"
	FlushLUKSEndCommit       FlushPoint = "luks-end-commit"
	FlushDecryptStartCommit  FlushPoint = "decrypt-start-commit"
	FlushDecryptHead         FlushPoint = "decrypt-head"
	FlushDecryptStashWipe    FlushPoint = "decrypt-stash-wipe"
	FlushDecryptRecordWipe   FlushPoint = "decrypt-record-wipe"
	FlushLUKS1Mark           FlushPoint = "luks1-mark"
	FlushLUKS1StartCommit    FlushPoint = "luks1-start-commit"
	FlushLUKS1FinalSwitch    FlushPoint = "luks1-final-switch"
	FlushLUKS1EndCommit      FlushPoint = "luks1-end-commit"
)

// FlushPoints lists every flush point, in the order of the design's table.
// A data flush point p whose digest entry went to another device is
// followed by p.Meta(), which is not listed apart: it completes p.
func FlushPoints() []FlushPoint {
	return []FlushPoint{FlushCreateDigestTable, FlushHeaderCommit, FlushJournalRecord, FlushJournalData,
		FlushChecksumRecord, FlushChecksumData, FlushWindowData, FlushProgressRecord,
		FlushOnlineCommit, FlushRecoverJournalData, FlushRecoverChecksumData,
		FlushAcceptDamage, FlushAcceptIdentity,
		FlushLUKSKeyslotMaterial, FlushLUKSStartCommit, FlushLUKSFinalCommit, FlushLUKSKeyslotWipe, FlushLUKSEndCommit,
		FlushDecryptStartCommit, FlushDecryptHead, FlushDecryptStashWipe, FlushDecryptRecordWipe,
		FlushLUKS1Mark, FlushLUKS1StartCommit, FlushLUKS1FinalSwitch, FlushLUKS1EndCommit}
}

// Meta is the flush of the metadata device that follows data flush point p
// when the digest entry went to another device than the window.
func (p FlushPoint) Meta() FlushPoint { return p + "-meta" }

// flush is the only way the engine flushes (the header store's commits go
// through it too, see newConv), so that every flush point has a name the
// crash argument and the mutation test can refer to.
func (c *conv) flush(dev blockdev.Device, point FlushPoint) error {
	if c.opts.Hooks != nil && c.opts.Hooks.DropFlush[point] {
		return nil
	}
	if err := dev.Flush(); err != nil {
		return errclass.IOf("flush ("+string(point)+")", err)
	}
	return nil
}

package online

import (
	"fmt"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/fsck"
	"github.com/cryptshift/cryptshift/header"
)

// LiveAudit is the check of `verify --online NAME` (fsck.Options.Live): it
// compares NAME's live table with the one recovery would build for the
// recorded progress, over device ("major:minor"). Any other table serves
// some sectors with a key that does not match what is on disk.
func LiveAudit(name, device string) func(h *header.Header, oldKey, newKey []byte) fsck.Finding {
	return func(h *header.Header, oldKey, newKey []byte) fsck.Finding {
		f := func(sev, format string, a ...any) fsck.Finding {
			return fsck.Finding{Severity: sev, What: fmt.Sprintf(format, a...)}
		}
		live, err := dm.Table(name)
		if err != nil {
			return f(fsck.Error, "cannot read the live table of %s: %v", name, err)
		}
		if h.State == header.StateInProgress {
			return f(fsck.Warning, "%s: the conversion is marked in progress, so its table cannot be judged: run `cryptshift recover --activate %s`", name, name)
		}
		// SameService ignores format-neutral options, so the expected
		// table needs none.
		want, err := Composite(h, Keys{Old: oldKey, New: newKey}, device, nil)
		if err != nil {
			return f(fsck.Error, "cannot build the expected table of %s: %v", name, err)
		}
		if same, why := dm.SameService(live, want); !same {
			return f(fsck.Error, "%s's live table does not match the recorded progress (%s): run `cryptshift recover --activate %s`", name, why, name)
		}
		return f(fsck.Info, "%s's live table serves %d of %d windows with the new mapping, as recorded", name, h.Done, h.Windows())
	}
}

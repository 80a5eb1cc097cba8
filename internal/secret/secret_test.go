package secret

import (
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

func TestKeyMemory(t *testing.T) {
	k, err := New(64)
	if err != nil {
		t.Fatal(err)
	}
	b := k.Bytes()
	for i := range b {
		b[i] = 0xa5
	}
	if !k.Locked() {
		t.Log("mlock refused here (RLIMIT_MEMLOCK); the key is still off-heap and wiped")
	}
	k.Wipe()
	if k.Bytes() != nil {
		t.Fatal("Wipe left the key readable")
	}
	k.Wipe() // twice is harmless
	var nilKey *Key
	nilKey.Wipe()
}

func TestWipe(t *testing.T) {
	b := []byte("0123456789abcdef")
	Wipe(b)
	for i, c := range b {
		if c != 0 {
			t.Fatalf("byte %d is %#x after Wipe", i, c)
		}
	}
}

// TestNoCoreDumps runs in a child process, since the settings cannot be
// undone in the test binary.
func TestNoCoreDumps(t *testing.T) {
	if os.Getenv("SECRET_TEST_CHILD") == "1" {
		if err := NoCoreDumps(); err != nil {
			t.Fatal(err)
		}
		if d, err := Dumpable(); err != nil || d {
			t.Fatalf("dumpable after NoCoreDumps: %v, %v", d, err)
		}
		var lim unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_CORE, &lim); err != nil || lim.Cur != 0 || lim.Max != 0 {
			t.Fatalf("RLIMIT_CORE %+v, %v", lim, err)
		}
		return
	}
	if d, err := Dumpable(); err != nil || !d {
		t.Fatalf("the test process is not dumpable to begin with (%v, %v): the check below proves nothing", d, err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNoCoreDumps$", "-test.v")
	cmd.Env = append(os.Environ(), "SECRET_TEST_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

package vm

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Guest directories for what the harness installs. They come first in the
// guest's PATH so a real tool wins over a busybox applet of the same name.
const (
	guestToolDir = "/usr/local/sbin" // host tools copied with their libraries
	guestGoDir   = "/usr/local/bin"  // static Go binaries built for the guest
	guestPATH    = guestToolDir + ":" + guestGoDir + ":/sbin:/bin:/usr/sbin:/usr/bin"
)

// DefaultTools are the host programs copied into every guest unless the caller
// names its own list.
var DefaultTools = []string{"cryptsetup", "dmsetup", "e2fsck", "mkfs.ext4", "blkid"}

// Image describes the initramfs of a guest, apart from the per-boot script.
type Image struct {
	// Modules are kernel module names to load at boot, dependencies first;
	// nil means DefaultModules.
	Modules []string
	// Tools are host programs copied into the guest at /usr/local/sbin, with the
	// shared libraries ldd lists for them; nil means DefaultTools.
	Tools []string
	// GoPackages are package patterns built with CGO_ENABLED=0 from the module
	// root (e.g. "./cmd/cryptshift") and installed at /usr/local/bin/<name>.
	GoPackages []string
	// GoTags are build tags for GoPackages: "testhooks" compiles in the
	// CLI's test hooks (cmd/cryptshift/testhooks.go), which the release
	// build does not have.
	GoTags []string
	// Files maps guest paths to host files copied as they are.
	Files map[string]string
}

func (im Image) modules() []string {
	if im.Modules == nil {
		return DefaultModules
	}
	return im.Modules
}

func (im Image) tools() []string {
	if im.Tools == nil {
		return DefaultTools
	}
	return im.Tools
}

func (im Image) key(k *Kernel) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kernel=%s\nmodules=%q\ntools=%q\ngo=%q\ntags=%q\n", k.Version, im.modules(), im.tools(), im.GoPackages, im.GoTags)
	var guest []string
	for g := range im.Files {
		guest = append(guest, g)
	}
	sort.Strings(guest)
	for _, g := range guest {
		fmt.Fprintf(&b, "file %q=%q\n", g, im.Files[g])
	}
	return b.String()
}

// The base archive is the expensive part (go build, ldd, reading modules), and
// tests in one run mostly share an Image, so it is built once per process.
var (
	baseMu    sync.Mutex
	baseCache = map[string]*baseEntry{}
)

type baseEntry struct {
	once sync.Once
	data []byte
	err  error
}

func baseArchive(k *Kernel, im Image) ([]byte, error) {
	key := im.key(k)
	baseMu.Lock()
	e, ok := baseCache[key]
	if !ok {
		e = &baseEntry{}
		baseCache[key] = e
	}
	baseMu.Unlock()
	e.once.Do(func() { e.data, e.err = buildBase(k, im) })
	return e.data, e.err
}

func buildBase(k *Kernel, im Image) ([]byte, error) {
	a := newArchive()
	for _, d := range []string{"/proc", "/sys", "/dev", "/run", "/tmp", "/etc/vm", "/root", "/mnt"} {
		a.addDir(d)
	}
	// The kernel opens /dev/console for init before devtmpfs is mounted.
	a.addCharDev("/dev/console", 5, 1)
	a.addCharDev("/dev/null", 1, 3)

	bb, err := staticBusybox()
	if err != nil {
		return nil, err
	}
	if err := addHostFile(a, "/bin/busybox", bb); err != nil {
		return nil, err
	}
	out, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("vm: busybox --list-full: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" || applet == "linuxrc" {
			continue
		}
		a.addSymlink("/"+applet, "/bin/busybox")
	}

	mods, err := k.moduleFiles(im.modules())
	if err != nil {
		return nil, err
	}
	for _, m := range mods {
		if err := addHostFile(a, m, m); err != nil {
			return nil, err
		}
	}
	a.addFile("/etc/vm/modules", 0o644, []byte(strings.Join(mods, "\n")+"\n"))

	for _, tool := range im.tools() {
		if err := addTool(a, tool); err != nil {
			return nil, err
		}
	}
	if len(im.GoPackages) > 0 {
		if err := addGoPackages(a, im.GoPackages, im.GoTags); err != nil {
			return nil, err
		}
	}
	for guest, host := range im.Files {
		if err := addHostFile(a, guest, host); err != nil {
			return nil, err
		}
	}
	a.addFile("/init", 0o755, []byte(initScript))

	var buf bytes.Buffer
	if err := a.writeTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// initScript mounts the kernel filesystems, loads the modules, runs the
// scenario and powers off. Markers carry a per-boot nonce so that text a
// scenario prints cannot be mistaken for them; each sits on a line of its own
// because kernel messages may interleave with the script's output.
const initScript = `#!/bin/sh
export PATH=` + guestPATH + `
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/mapper /run/cryptsetup /run/lock /var
ln -s /run /var/run
ln -s /run/lock /var/lock
mount -t tmpfs tmpfs /tmp
nonce=$(cat /etc/vm/nonce)
echo
echo "@@VM-INIT $nonce@@"
while read -r m; do
	[ -n "$m" ] || continue
	insmod "$m" || echo "@@VM-MODFAIL $nonce $m@@"
done </etc/vm/modules
echo
echo "@@VM-READY $nonce@@"
cd /tmp
sh /etc/vm/script </dev/null
rc=$?
sync
echo
echo "@@VM-EXIT $nonce $rc@@"
echo "@@VM-EXIT $nonce $rc@@"
poweroff -f
`

func staticBusybox() (string, error) {
	bb := "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		p, err := lookTool("busybox")
		if err != nil {
			return "", err
		}
		bb = p
	}
	f, err := elf.Open(bb)
	if err != nil {
		return "", fmt.Errorf("vm: %s: %w", bb, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("vm: %s is dynamically linked; the initramfs needs busybox-static; %s", bb, installHint)
		}
	}
	return bb, nil
}

func addHostFile(a *archive, guest, host string) error {
	data, err := os.ReadFile(host)
	if err != nil {
		return fmt.Errorf("vm: initramfs: %w", err)
	}
	st, err := os.Stat(host)
	if err != nil {
		return fmt.Errorf("vm: initramfs: %w", err)
	}
	a.addFile(guest, uint32(st.Mode().Perm()), data)
	return nil
}

// addTool copies a dynamically linked host program and every library ldd lists
// for it, each at the path ldd printed, which is where the guest's dynamic loader
// looks for it too.
func addTool(a *archive, name string) error {
	path, err := lookTool(name)
	if err != nil {
		return err
	}
	if err := addHostFile(a, filepath.Join(guestToolDir, filepath.Base(path)), path); err != nil {
		return err
	}
	libs, err := sharedLibs(path)
	if err != nil {
		return err
	}
	for _, lib := range libs {
		if err := addHostFile(a, lib, lib); err != nil {
			return err
		}
	}
	return nil
}

func sharedLibs(path string) ([]string, error) {
	ldd, err := lookTool("ldd")
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(ldd, path).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) || bytes.Contains(out, []byte("statically linked")) {
			return nil, nil
		}
		return nil, fmt.Errorf("vm: ldd %s: %w: %s", path, err, out)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("vm: ldd %s: %s", path, line)
		}
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vdso has no file.
		if _, after, ok := strings.Cut(line, "=> "); ok {
			line = after
		}
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], "/") {
			libs = append(libs, f[0])
		}
	}
	return libs, nil
}

// addGoPackages builds the packages as static binaries in one go build call,
// with the build tags given, and installs each under its binary name.
func addGoPackages(a *archive, pkgs, tags []string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	goBin, err := goTool()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "vm-gobuild-")
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	defer os.RemoveAll(dir)
	args := []string{"build", "-trimpath", "-o", dir + string(filepath.Separator)}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	args = append(args, pkgs...)
	cmd := exec.Command(goBin, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("vm: go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	if len(ents) == 0 {
		return fmt.Errorf("vm: go build %s produced no binary (not a main package?)", strings.Join(pkgs, " "))
	}
	for _, e := range ents {
		if err := addHostFile(a, filepath.Join(guestGoDir, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		return "/usr/local/go/bin/go", nil
	}
	return "", fmt.Errorf("vm: the go command is not on PATH; it is needed to build guest binaries")
}

// moduleRoot finds the directory of the go.mod above the working directory, so
// package patterns like ./cmd/cryptshift mean the same from any test package.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("vm: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("vm: no go.mod above the working directory")
		}
		dir = parent
	}
}

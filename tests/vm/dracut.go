package vm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Dracut describes an initramfs built by the host's dracut (Debian's
// dracut-core package, which tests/vm/install-deps.sh installs) for the
// guest kernel, booted with Config.Initrd.
type Dracut struct {
	// Modules are the dracut modules to include (dracut -m; their
	// dependencies come too).
	Modules []string
	// ModuleDirs are extra module folders (such as dist/dracut/90cryptshift)
	// added to a private copy of dracut's module tree: the machine's own
	// /usr/lib/dracut is never changed.
	ModuleDirs []string
	// Drivers are kernel modules to include (dracut --drivers).
	Drivers []string
	// Install are host programs to include with their libraries (dracut --install).
	Install []string
	// Conf is the dracut configuration file's text (shell assignments,
	// which modules read as settings); no other configuration is read.
	Conf string
}

// BuildDracut writes the image d describes for kernel k to out. It is
// uncompressed: unpacking it costs the emulated guest nothing, unlike a
// decompression. Building takes tens of seconds (dracut resolves every
// module and library), so a test builds once and boots it several times.
func BuildDracut(k *Kernel, d Dracut, out string) error {
	dracut, err := exec.LookPath("dracut")
	if err != nil {
		return fmt.Errorf("vm: dracut not found (tests/vm/install-deps.sh installs dracut-core): %w", err)
	}
	const sysBase = "/usr/lib/dracut"
	work, err := os.MkdirTemp("", "vm-dracut-")
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	defer os.RemoveAll(work)
	// dracut finds its scripts and modules through dracutbasedir: a folder
	// of links to the system's, with the extra modules beside them.
	base := filepath.Join(work, "base")
	mods := filepath.Join(base, "modules.d")
	if err := os.MkdirAll(mods, 0o755); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	top, err := os.ReadDir(sysBase)
	if err != nil {
		return fmt.Errorf("vm: dracut: %w", err)
	}
	for _, e := range top {
		if e.Name() == "modules.d" {
			continue
		}
		if err := os.Symlink(filepath.Join(sysBase, e.Name()), filepath.Join(base, e.Name())); err != nil {
			return fmt.Errorf("vm: %w", err)
		}
	}
	sys, err := os.ReadDir(filepath.Join(sysBase, "modules.d"))
	if err != nil {
		return fmt.Errorf("vm: dracut: %w", err)
	}
	for _, e := range sys {
		if err := os.Symlink(filepath.Join(sysBase, "modules.d", e.Name()), filepath.Join(mods, e.Name())); err != nil {
			return fmt.Errorf("vm: %w", err)
		}
	}
	for _, m := range d.ModuleDirs {
		abs, err := filepath.Abs(m)
		if err != nil {
			return fmt.Errorf("vm: %w", err)
		}
		dst := filepath.Join(mods, filepath.Base(abs))
		_ = os.Remove(dst) // the extra module replaces a system one of that name
		if err := os.Symlink(abs, dst); err != nil {
			return fmt.Errorf("vm: %w", err)
		}
	}
	conf := filepath.Join(work, "dracut.conf")
	confDir := filepath.Join(work, "conf.d")
	tmp := filepath.Join(work, "tmp")
	for _, dir := range []string{confDir, tmp} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("vm: %w", err)
		}
	}
	if err := os.WriteFile(conf, []byte(d.Conf), 0o644); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	args := []string{
		"--conf", conf, "--confdir", confDir, "--tmpdir", tmp,
		// Not host-only: the image is for the guest, not for this machine.
		"--no-hostonly", "--no-hostonly-cmdline", "--no-compress", "--force",
		"--kver", k.Version, "-m", strings.Join(d.Modules, " "),
	}
	if len(d.Drivers) > 0 {
		args = append(args, "--drivers", strings.Join(d.Drivers, " "))
	}
	if len(d.Install) > 0 {
		args = append(args, "--install", strings.Join(d.Install, " "))
	}
	args = append(args, out)
	cmd := exec.Command(dracut, args...)
	cmd.Env = append(os.Environ(), "dracutbasedir="+base)
	var log bytes.Buffer
	cmd.Stdout = &log
	cmd.Stderr = &log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("vm: dracut %s: %w\n%s", strings.Join(args, " "), err, tail(log.String(), 40))
	}
	return nil
}

// DracutFiles lists the paths in a dracut image (from lsinitrd), sorted.
func DracutFiles(image string) ([]string, error) {
	out, err := exec.Command("lsinitrd", image).Output()
	if err != nil {
		return nil, fmt.Errorf("vm: lsinitrd %s: %w", image, err)
	}
	// Its listing is ls -l's: the path is the ninth field.
	var paths []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 9 && len(f[0]) == 10 && strings.ContainsAny(f[0][:1], "-dlcbps") {
			paths = append(paths, "/"+f[8])
		}
	}
	sort.Strings(paths)
	return paths, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// SystemdRunner returns the per-boot files (for Config.Files) that make a
// systemd initramfs run the harness's script: a unit that initrd.target
// wants, ordered after the units named in after (the root filesystem's
// sysroot.mount, say) and before initrd.target, so the script runs in the
// initramfs, with the root mounted at /sysroot, before any switch to it.
// It prints the harness's markers on the console and powers off, as the
// harness's own /init does.
func SystemdRunner(after ...string) map[string][]byte {
	unit := `[Unit]
Description=tests/vm script
DefaultDependencies=no
After=` + strings.Join(after, " ") + `
Wants=` + strings.Join(after, " ") + `
Before=initrd.target

[Service]
Type=oneshot
ExecStart=/bin/sh /etc/vm/run
StandardInput=null
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
`
	run := `export PATH=` + guestPATH + `
nonce=$(cat /etc/vm/nonce)
echo
echo "@@VM-READY $nonce@@"
mkdir -p /tmp
cd /tmp
sh /etc/vm/script </dev/null
rc=$?
sync
echo
echo "@@VM-EXIT $nonce $rc@@"
echo "@@VM-EXIT $nonce $rc@@"
systemctl --force --force poweroff
`
	return map[string][]byte{
		"/etc/systemd/system/vm-script.service":       []byte(unit),
		"/etc/systemd/system/initrd.target.d/vm.conf": []byte("[Unit]\nWants=vm-script.service\n"),
		"/etc/vm/run": []byte(run),
	}
}

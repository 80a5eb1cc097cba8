package vm

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// KernelEnv names an environment variable that picks the guest kernel: either a
// version (as in /lib/modules/<version>) or a path to a kernel image whose name
// ends in -<version>.
const KernelEnv = "CRYPTSHIFT_VM_KERNEL"

// QemuEnv names an environment variable that overrides the qemu binary.
const QemuEnv = "CRYPTSHIFT_VM_QEMU"

// installHint ends every "something is missing" error so a reader knows the fix.
const installHint = "run tests/vm/install-deps.sh as root to install qemu, a kernel and the guest tools"

// Kernel is a bootable kernel image with its module tree.
type Kernel struct {
	Version string // e.g. 6.1.0-56-amd64
	Image   string // /boot/vmlinuz-<Version>
	Modules string // /lib/modules/<Version>
}

// FindKernel returns the kernel the guests boot: the one named by KernelEnv, else
// the host's running kernel when its image is installed, else the newest
// /boot/vmlinuz-<kver> that has a /lib/modules/<kver>.
func FindKernel() (*Kernel, error) {
	if want := os.Getenv(KernelEnv); want != "" {
		ver := want
		if strings.Contains(want, "/") {
			base := filepath.Base(want)
			i := strings.Index(base, "-")
			if i < 0 {
				return nil, fmt.Errorf("vm: %s=%s: cannot tell the version from the image name", KernelEnv, want)
			}
			ver = base[i+1:]
			return checkKernel(ver, want)
		}
		return checkKernel(ver, "/boot/vmlinuz-"+ver)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		running := unix.ByteSliceToString(uts.Release[:])
		if k, err := checkKernel(running, "/boot/vmlinuz-"+running); err == nil {
			return k, nil
		}
	}
	images, _ := filepath.Glob("/boot/vmlinuz-*")
	var versions []string
	for _, img := range images {
		ver := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		if _, err := checkKernel(ver, img); err == nil {
			versions = append(versions, ver)
		}
	}
	if len(versions) == 0 {
		return nil, fmt.Errorf("vm: no kernel found (no /boot/vmlinuz-<kver> with /lib/modules/<kver>); %s", installHint)
	}
	sort.Slice(versions, func(i, j int) bool { return versionLess(versions[i], versions[j]) })
	return checkKernel(versions[len(versions)-1], "/boot/vmlinuz-"+versions[len(versions)-1])
}

func checkKernel(version, image string) (*Kernel, error) {
	k := &Kernel{Version: version, Image: image, Modules: filepath.Join("/lib/modules", version)}
	f, err := os.Open(image)
	if err != nil {
		return nil, fmt.Errorf("vm: kernel image: %w; %s", err, installHint)
	}
	f.Close()
	if st, err := os.Stat(filepath.Join(k.Modules, "modules.dep")); err != nil || st.Size() == 0 {
		return nil, fmt.Errorf("vm: kernel %s has no module tree at %s; %s", version, k.Modules, installHint)
	}
	return k, nil
}

// versionLess orders kernel versions by their numeric fields so 6.10 sorts after 6.9.
func versionLess(a, b string) bool {
	fa, fb := versionFields(a), versionFields(b)
	for i := 0; i < len(fa) && i < len(fb); i++ {
		na, ea := strconv.Atoi(fa[i])
		nb, eb := strconv.Atoi(fb[i])
		if ea == nil && eb == nil {
			if na != nb {
				return na < nb
			}
			continue
		}
		if fa[i] != fb[i] {
			return fa[i] < fb[i]
		}
	}
	return len(fa) < len(fb)
}

func versionFields(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '_' })
}

// DefaultModules are loaded in every guest unless the caller names its own list:
// the disk driver, device-mapper targets the project tests against, the crypto
// the dm-crypt specs need, and ext4 and loop for filesystem scenarios.
var DefaultModules = []string{
	"virtio_pci", "virtio_blk",
	"dm-mod", "dm-crypt", "dm-flakey", "dm-log-writes", "dm-delay",
	"xts", "essiv", "aesni-intel",
	"ext4", "loop",
}

// moduleFiles resolves module names to the .ko files to insmod, in an order that
// loads every dependency first. Built-in modules need no file and are skipped.
func (k *Kernel) moduleFiles(names []string) ([]string, error) {
	modprobe, err := lookTool("modprobe")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var files []string
	for _, name := range names {
		var stderr bytes.Buffer
		cmd := exec.Command(modprobe, "--show-depends", "-S", k.Version, name)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("vm: modprobe --show-depends %s for kernel %s: %w: %s",
				name, k.Version, err, strings.TrimSpace(stderr.String()))
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || f[0] != "insmod" {
				continue // "builtin NAME" lines
			}
			file := f[1]
			if strings.HasSuffix(file, ".xz") || strings.HasSuffix(file, ".zst") || strings.HasSuffix(file, ".gz") {
				// busybox insmod passes the bytes to init_module unchanged.
				return nil, fmt.Errorf("vm: module %s is compressed; the harness loads only uncompressed modules", file)
			}
			if !seen[file] {
				seen[file] = true
				files = append(files, file)
			}
		}
	}
	return files, nil
}

// lookTool finds a host program, also in the sbin directories a non-root PATH lacks.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("vm: %s not found on the host; %s", name, installHint)
}

// QemuBinary returns the qemu-system-x86_64 the harness runs.
func QemuBinary() (string, error) {
	if p := os.Getenv(QemuEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("vm: %s=%s: %w", QemuEnv, p, err)
		}
		return p, nil
	}
	return lookTool("qemu-system-x86_64")
}

// Check reports, in one error, everything missing for booting guests, so a test
// can fail with the whole list rather than the first problem.
func Check() error {
	var errs []error
	if _, err := QemuBinary(); err != nil {
		errs = append(errs, err)
	}
	if _, err := FindKernel(); err != nil {
		errs = append(errs, err)
	}
	if _, err := staticBusybox(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Booting the compressed bzImage makes the emulated CPU decompress about 60 MB of
// kernel at every boot, which took about 4 of the 7 seconds measured here. When
// the kernel has a PVH entry point (CONFIG_PVH), qemu can load the uncompressed
// ELF directly, so the harness extracts it once and keeps it in the user's cache.
var (
	bootImageMu    sync.Mutex
	bootImageCache = map[string]string{}
)

// BootImage returns the file qemu's -kernel should load: an extracted vmlinux
// with a PVH note when that works, otherwise the original image.
func (k *Kernel) BootImage() string {
	bootImageMu.Lock()
	defer bootImageMu.Unlock()
	if p, ok := bootImageCache[k.Image]; ok {
		return p
	}
	p, err := k.extractVmlinux()
	if err != nil {
		p = k.Image
	}
	bootImageCache[k.Image] = p
	return p
}

func (k *Kernel) extractVmlinux() (string, error) {
	st, err := os.Stat(k.Image)
	if err != nil {
		return "", err
	}
	cacheDir, err := os.UserCacheDir()
	if err != nil {
		cacheDir = os.TempDir()
	}
	dir := filepath.Join(cacheDir, "cryptshift-vm")
	name := fmt.Sprintf("vmlinux-%s-%d-%d", k.Version, st.Size(), st.ModTime().UnixNano())
	out := filepath.Join(dir, name)
	if hasPVHNote(out) {
		return out, nil
	}
	img, err := os.ReadFile(k.Image)
	if err != nil {
		return "", err
	}
	raw, err := decompressKernel(img)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, name+".tmp-")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if !hasPVHNote(tmp.Name()) {
		return "", fmt.Errorf("vm: %s has no PVH entry point", k.Image)
	}
	// Rename is atomic, so concurrent test processes never see a partial file.
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", err
	}
	return out, nil
}

// decompressKernel finds the compressed payload inside a bzImage and inflates it.
// The payload is followed by the rest of the bzImage, so a decompressor that
// complains about trailing data is fine as long as an ELF image came out.
func decompressKernel(img []byte) ([]byte, error) {
	type method struct {
		magic []byte
		tool  string
	}
	for _, m := range []method{
		{[]byte{0xfd, '7', 'z', 'X', 'Z', 0}, "xz"},
		{[]byte{0x28, 0xb5, 0x2f, 0xfd}, "zstd"},
		{[]byte{0x1f, 0x8b, 0x08}, "gzip"},
	} {
		for off := 0; ; {
			i := bytes.Index(img[off:], m.magic)
			if i < 0 {
				break
			}
			off += i
			raw := runDecompressor(m.tool, img[off:])
			if len(raw) > 4 && bytes.Equal(raw[:4], []byte(elf.ELFMAG)) {
				return raw, nil
			}
			off++
		}
	}
	return nil, fmt.Errorf("vm: no decompressible kernel payload found")
}

func runDecompressor(tool string, data []byte) []byte {
	if tool == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil
		}
		zr.Multistream(false)
		raw, _ := io.ReadAll(zr)
		return raw
	}
	path, err := lookTool(tool)
	if err != nil {
		return nil
	}
	cmd := exec.Command(path, "-dc")
	cmd.Stdin = bytes.NewReader(data)
	raw, _ := cmd.Output()
	return raw
}

// hasPVHNote tells whether file is an ELF kernel with the XEN_ELFNOTE_PHYS32_ENTRY
// note qemu needs to boot it directly.
func hasPVHNote(file string) bool {
	f, err := elf.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	const xenElfnotePhys32Entry = 18
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data, err := io.ReadAll(p.Open())
		if err != nil {
			continue
		}
		for len(data) >= 12 {
			namesz := binary.LittleEndian.Uint32(data[0:])
			descsz := binary.LittleEndian.Uint32(data[4:])
			typ := binary.LittleEndian.Uint32(data[8:])
			nameEnd := 12 + int((namesz+3)&^3)
			descEnd := nameEnd + int((descsz+3)&^3)
			if descEnd > len(data) || nameEnd > len(data) {
				break
			}
			name := string(bytes.TrimRight(data[12:12+namesz], "\x00"))
			if name == "Xen" && typ == xenElfnotePhys32Entry {
				return true
			}
			data = data[descEnd:]
		}
	}
	return false
}

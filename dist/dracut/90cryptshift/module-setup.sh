#!/bin/bash
# dracut module: puts cryptshift, its table and the key files the table
# names into the initramfs, and finishes interrupted conversions at boot
# before the root device is opened: the same job as the initramfs-tools
# hook in dist/initramfs-tools, for dracut (Fedora, RHEL, openSUSE, and
# Debian with dracut). dracut sources this file and calls the functions.
#
# Settings (in /etc/dracut.conf.d/*.conf, or the environment):
#   cryptshift_tab=PATH     the table to copy (default /etc/cryptshift/cryptshifttab);
#                           in the initramfs it is always /etc/cryptshift/cryptshifttab
#   cryptshift_binary=PATH  the binary to copy (default: cryptshift in dracut's
#                           PATH, else /usr/local/sbin/cryptshift)
# The image holds the keys: dracut writes it with umask 077; keep it so.

cryptshift_tab_src() {
    echo "${cryptshift_tab:-/etc/cryptshift/cryptshifttab}"
}

cryptshift_bin_src() {
    if [[ $cryptshift_binary ]]; then
        echo "$cryptshift_binary"
        return
    fi
    # dracut's PATH has no /usr/local: a binary installed by hand lives there.
    find_binary cryptshift 2> /dev/null || echo /usr/local/sbin/cryptshift
}

# called by dracut
check() {
    [[ -x $(cryptshift_bin_src) ]] || return 1
    # Without a table there is nothing to do at boot: included only when
    # asked for (--add cryptshift) or needed by another module.
    [[ -r $(cryptshift_tab_src) ]] || return 255
    return 0
}

# called by dracut
depends() {
    # dm: dmsetup and the device-mapper udev rules, which give the device
    # recover --all creates its /dev/mapper and /dev/disk links.
    echo dm
    return 0
}

# called by dracut
installkernel() {
    # The ciphers are in the device's header, not in the table, and the
    # conversion may start after this image is built: every crypto module
    # goes in, as 90crypt does for a generic image.
    hostonly='' instmods dm_mod dm_crypt
    hostonly='' instmods '=crypto'
    local arch
    arch=$(uname -m)
    case $arch in
        x86_64 | i?86) arch=x86 ;;
        aarch64) arch=arm64 ;;
        s390x) arch=s390 ;;
        ppc64*) arch=powerpc ;;
    esac
    hostonly='' instmods "=arch/$arch/crypto" '=drivers/crypto'
    return 0
}

# called by dracut
install() {
    local tab bin name dev oldk newk opts k
    tab=$(cryptshift_tab_src)
    bin=$(cryptshift_bin_src)

    inst_simple "$bin" /sbin/cryptshift || {
        derror "cryptshift: cannot install $bin"
        return 1
    }
    if [[ -r $tab ]]; then
        inst_simple "$tab" /etc/cryptshift/cryptshifttab
        # Fields 3 and 4 are the key files ("-" for a plaintext side); the
        # fifth may name a metadata file, which must be on a device the
        # initramfs can read (the end of DEVICE is simplest).
        while read -r name dev oldk newk opts; do
            [[ $name ]] || continue
            for k in "$oldk" "$newk"; do
                [[ $k == - ]] && continue
                if [[ $k != /* ]]; then
                    derror "cryptshift: $tab: key file $k of $name is not an absolute path"
                    return 1
                fi
                if [[ ! -r $k ]]; then
                    derror "cryptshift: $tab: key file $k of $name unreadable"
                    return 1
                fi
                inst_simple "$k"
            done
            if [[ $opts == *metadata=/dev/* ]]; then
                :
            elif [[ $opts == *metadata=* ]]; then
                dwarn "cryptshift: $tab: $name keeps its metadata in a file; recovery at boot needs it on a device the initramfs can read"
            fi
        done < <(sed -e 's/#.*//' "$tab")
    fi

    inst_hook cmdline 30 "$moddir/parse-cryptshift.sh"
    if dracut_module_included "systemd"; then
        # The unit orders recovery before cryptsetup and before the root
        # device counts as there, which a dracut hook cannot express.
        inst_simple "$moddir/cryptshift-recover.service" "$systemdsystemunitdir/cryptshift-recover.service"
        $SYSTEMCTL -q --root "$initdir" add-wants initrd.target cryptshift-recover.service
    else
        # Without systemd, the initqueue runs this once udev has settled
        # (the disks are there) and before it gives up waiting for root.
        inst_hook initqueue/settled 10 "$moddir/cryptshift-recover.sh"
    fi
    return 0
}

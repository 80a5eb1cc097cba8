#!/bin/sh
# dracut initqueue job (initramfs without systemd): before the root device
# is opened, finish any interrupted cryptshift conversion and set up its
# device-mapper device with the table that matches the recorded progress.
# The initqueue sources this file: it must not exit, and it removes itself
# so that it runs once.
type warn > /dev/null 2>&1 || . /lib/dracut-lib.sh

[ -n "$job" ] && rm -f -- "$job"
if [ -x /sbin/cryptshift ] && [ -r /etc/cryptshift/cryptshifttab ]; then
    modprobe -q dm_mod
    modprobe -q dm_crypt
    if ! /sbin/cryptshift recover --all --wait 60s --tab /etc/cryptshift/cryptshifttab; then
        warn "cryptshift: recovery failed; devices under conversion are not set up"
    fi
fi

#!/bin/sh
# dracut cmdline hook: rd.cryptshift=0 on the kernel command line turns the
# boot-time recovery off (for a rescue boot that must not touch the disks).
type getargbool > /dev/null 2>&1 || . /lib/dracut-lib.sh

if ! getargbool 1 rd.cryptshift; then
    info "cryptshift: rd.cryptshift=0, no recovery"
    rm -f -- /etc/cryptshift/cryptshifttab
fi

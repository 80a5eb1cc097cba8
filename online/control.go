package online

import "github.com/cryptshift/cryptshift/dm"

// control is the device-mapper operations the online holder uses, so that
// their order can be checked on a host without device-mapper.
type control interface {
	create(name, uuid string, table []dm.Target) error
	load(name string, table []dm.Target) error
	suspend(name string, flags dm.SuspendFlags) error
	resume(name string, flags dm.SuspendFlags) error
	remove(name string) error
	info(name string) (dm.DevInfo, error)
	table(name string) ([]dm.Target, error)
	// devSize is the size in sectors of the block device "major:minor".
	devSize(devno string) (uint64, error)
}

// sysControl is the kernel's device-mapper.
type sysControl struct{}

func (sysControl) create(name, uuid string, table []dm.Target) error {
	return dm.Create(name, uuid, table)
}
func (sysControl) load(name string, table []dm.Target) error    { return dm.Load(name, table) }
func (sysControl) suspend(name string, f dm.SuspendFlags) error { return dm.Suspend(name, f) }
func (sysControl) resume(name string, f dm.SuspendFlags) error  { return dm.ResumeFlags(name, f) }
func (sysControl) remove(name string) error                     { return dm.Remove(name) }
func (sysControl) info(name string) (dm.DevInfo, error)         { return dm.Info(name) }
func (sysControl) table(name string) ([]dm.Target, error)       { return dm.Table(name) }
func (sysControl) devSize(devno string) (uint64, error)         { return blockDevSize("/sys", devno) }

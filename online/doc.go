// Package online converts a device while a device-mapper device NAME
// serves its data (and a filesystem on it may be mounted). It is the one
// home of that sequence, for `cryptshift convert --online`, `recover
// --activate`, `verify --online` and the real-kernel test guests alike:
// checking NAME's live table against the device and the recorded
// conversion, taking NAME's lock, taking the old mapping and keys from the
// live tables, holding each window on two private hold devices while the
// engine converts it (Online), the kernel crypto devices, the composite
// table of a paused conversion, and bringing a NAME a dead process left
// behind to that table. Package dm below it is the ioctls and the table
// grammar only.
package online

package vm

import "sync/atomic"

// powerCuts counts the guests Boot killed while their script still ran
// (Config.KillOn/KillAfter): power cuts the real kernel and its disks saw.
// A guest that had already reported its exit status when the kill came
// is not counted: nothing was cut.
var powerCuts atomic.Int64

// PowerCuts returns how many power cuts Boot has dealt in this process.
func PowerCuts() int64 { return powerCuts.Load() }

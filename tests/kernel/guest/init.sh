#!/bin/sh
# PID 1 of the User-Mode-Linux guest (see docs/testing.md, "The kernel peer rig").
#
# The guest's root file system is the host's "/" over hostfs, read-only, so this runs the
# host's /bin/sh. The SECSOCK_KPEER_* variables come from the UML kernel command line.
# Everything real happens in peer.py: it mounts the guest's own /proc, /sys and /run (until
# then /proc is the HOST's /proc seen through hostfs, so nothing here may touch /proc),
# loads the modules, configures eth0, serves the control channel and powers the guest off
# with reboot(2).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
"${SECSOCK_KPEER_PYTHON:?}" -S -I -B "${SECSOCK_KPEER_DIR:?}/peer.py"
echo "KPEER-EXIT rc=$?"
# peer.py powers off itself; this is the fallback when it could not (reboot(2), never sysrq).
exec "$SECSOCK_KPEER_PYTHON" -S -I -B -c 'import ctypes; ctypes.CDLL(None).reboot(0x4321FEDC)'

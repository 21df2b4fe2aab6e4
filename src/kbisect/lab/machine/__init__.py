"""An emulated rack machine: a QEMU virtual machine that boots Debian, Xen and GRUB2 from its own
disk, for hosts whose configuration has a `machine` section.

image: the disk image, built from Debian packages and cached by a hash of its recipe
disk:  putting a root directory on a partitioned, GRUB-bootable disk image without loop devices
vm:    the running machine (QEMU on a qcow2 overlay) and its power switch, `kbisect lab.power`

kbisect deploys to such a host exactly as to hardware (kbisect.lab.rack): nothing there knows.
"""

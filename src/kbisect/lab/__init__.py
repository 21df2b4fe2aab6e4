"""lab: Xen test hosts. A host is a transport (SSH) + a boot method + power control + console
capture; the embedded QEMU host and a rack machine implement the same protocol.

- `lab`: the lab as kbisect sees it (hosts by name, the lab key, leases, ending what it started)
- `protocol`: LabHost, what every kind of host implements, and the shared deploy + verification
- `kinds`: the table of host kinds (configuration `kind` -> class)
- `embedded`, `rack`: the two kinds; `qemu` + `initramfs` (QEMU direct boot), `grub` (boot
  through a grub2 entry), `power` (power drivers) are their parts
- `probe`: what a booted host says about itself; `lease`: one process per host
- `ssh`: keys, sessions, commands, file transfer and detached jobs over SSH
"""

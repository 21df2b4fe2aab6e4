"""lab: Xen test hosts. A host is a transport (SSH) + a boot method + power control + console
capture; the embedded QEMU host and a rack machine implement the same protocol."""

// KVM's coalesced MMIO/PIO ring: the register ioctls (their #defines span two lines in
// <linux/kvm.h>, which Scripts/gen-ioctl-constants.sh does not read) and a reader of the ring
// page with the acquire/release ordering the KVM API document asks for.
#ifndef CLINUX_COALESCED_SHIMS_H
#define CLINUX_COALESCED_SHIMS_H

#include <stdint.h>

/// The ioctl request number `KVM_REGISTER_COALESCED_MMIO`.
extern const unsigned long IOCTL_KVM_REGISTER_COALESCED_MMIO;
/// The ioctl request number `KVM_UNREGISTER_COALESCED_MMIO`.
extern const unsigned long IOCTL_KVM_UNREGISTER_COALESCED_MMIO;

/// Registers (or, with `unregister` set, unregisters) the zone [address, address + size) on
/// the VM `vm_fd`: port I/O when `pio` is set, else MMIO. Returns the ioctl's result.
int clinux_kvm_coalesced_zone(int vm_fd, uint64_t address, uint32_t size, int pio, int unregister);

/// One write KVM queued in the ring instead of exiting.
struct clinux_coalesced_write {
    uint64_t address;
    uint64_t data;
    uint32_t length;
    uint32_t pio;
};

/// Whether the ring at `ring_page` (`page_size` bytes) holds a write: a load-acquire of
/// `last` against `first`.
int clinux_coalesced_pending(const void *ring_page);

/// Takes the oldest write out of the ring at `ring_page` into `out` and advances `first` with
/// a store-release. Returns 1, or 0 when the ring is empty. One thread at a time.
int clinux_coalesced_pop(void *ring_page, uint32_t page_size, struct clinux_coalesced_write *out);

#endif

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

/// Registers (or, with `unregister` set, removes) the zone [address, address + size) on the
/// VM `vm_fd`: port I/O when `pio` is set, else MMIO. Returns the ioctl's result.
int clinux_kvm_coalesced_zone(int vm_fd, uint64_t address, uint32_t size, int pio, int unregister);

/// One write KVM queued in the ring instead of exiting.
struct clinux_coalesced_write {
    uint64_t address;
    uint64_t data;
    uint32_t length;
    uint32_t pio;
};

/// Whether the ring at `ring_page` holds a write not yet handled: `last` against `first`,
/// both loaded with acquire ordering.
int clinux_coalesced_pending(const void *ring_page);

/// Copies the oldest write of the ring at `ring_page` (`page_size` bytes) into `out`
/// without taking it out. Returns 1, or 0 when the ring is empty.
int clinux_coalesced_peek(const void *ring_page, uint32_t page_size, struct clinux_coalesced_write *out);

/// Takes the oldest write out of the ring (advances `first` with a store-release). Call it
/// only after the write ``clinux_coalesced_peek`` returned has been handled, so that a
/// thread that finds the ring empty knows every write in it has reached its device.
void clinux_coalesced_advance(void *ring_page, uint32_t page_size);

/// How many writes a ring of `page_size` bytes holds (KVM's `KVM_COALESCED_MMIO_MAX`).
uint32_t clinux_coalesced_capacity(uint32_t page_size);

/// The size of one ring entry (`struct kvm_coalesced_mmio`), for tests that build a ring.
uint32_t clinux_coalesced_entry_size(void);

#endif

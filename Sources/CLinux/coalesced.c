// The coalesced MMIO/PIO shims declared in coalesced_shims.h.
#include <string.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>
#include "coalesced_shims.h"

const unsigned long IOCTL_KVM_REGISTER_COALESCED_MMIO = KVM_REGISTER_COALESCED_MMIO;
const unsigned long IOCTL_KVM_UNREGISTER_COALESCED_MMIO = KVM_UNREGISTER_COALESCED_MMIO;

int clinux_kvm_coalesced_zone(int vm_fd, uint64_t address, uint32_t size, int pio, int unregister) {
    struct kvm_coalesced_mmio_zone zone;
    memset(&zone, 0, sizeof(zone));
    zone.addr = address;
    zone.size = size;
    zone.pio = pio ? 1 : 0;
    return ioctl(vm_fd, unregister ? KVM_UNREGISTER_COALESCED_MMIO : KVM_REGISTER_COALESCED_MMIO, &zone);
}

int clinux_coalesced_pending(const void *ring_page) {
    const struct kvm_coalesced_mmio_ring *ring = ring_page;
    return __atomic_load_n(&ring->last, __ATOMIC_ACQUIRE) != __atomic_load_n(&ring->first, __ATOMIC_ACQUIRE);
}

int clinux_coalesced_peek(const void *ring_page, uint32_t page_size, struct clinux_coalesced_write *out) {
    const struct kvm_coalesced_mmio_ring *ring = ring_page;
    uint32_t capacity = clinux_coalesced_capacity(page_size);
    uint32_t first = __atomic_load_n(&ring->first, __ATOMIC_RELAXED);
    if (first == __atomic_load_n(&ring->last, __ATOMIC_ACQUIRE)) return 0;
    if (first >= capacity) return 0;
    const struct kvm_coalesced_mmio *entry = &ring->coalesced_mmio[first];
    out->address = entry->phys_addr;
    out->length = entry->len > 8 ? 8 : entry->len;
    out->pio = entry->pio;
    out->data = 0;
    memcpy(&out->data, entry->data, out->length);
    return 1;
}

void clinux_coalesced_advance(void *ring_page, uint32_t page_size) {
    struct kvm_coalesced_mmio_ring *ring = ring_page;
    uint32_t capacity = clinux_coalesced_capacity(page_size);
    uint32_t first = __atomic_load_n(&ring->first, __ATOMIC_RELAXED);
    __atomic_store_n(&ring->first, (first + 1) % capacity, __ATOMIC_RELEASE);
}

uint32_t clinux_coalesced_capacity(uint32_t page_size) {
    return (page_size - (uint32_t)sizeof(struct kvm_coalesced_mmio_ring)) / (uint32_t)sizeof(struct kvm_coalesced_mmio);
}

uint32_t clinux_coalesced_entry_size(void) {
    return (uint32_t)sizeof(struct kvm_coalesced_mmio);
}

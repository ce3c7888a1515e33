// The C floor for the port-I/O exit benchmark: the same tiny 64-bit guest as
// HypervisorTesting.TinyGuest, driven with raw KVM ioctls and no abstraction at all.
#ifndef KVM_EXIT_FLOOR_H
#define KVM_EXIT_FLOOR_H

#include <stdint.h>

/// What one floor run measured.
typedef struct {
    /// Port-I/O exits to port 0x10 seen (the guest's loop).
    uint64_t exits;
    /// Seconds from the first KVM_RUN to the guest's final exit (port 0x11).
    double seconds;
    /// 0 on success; otherwise `message` says what failed.
    int error;
    /// A description of the failure, if any.
    char message[256];
} kvm_exit_floor_result;

/// Builds the guest, lets it do `iterations` `out 0x10, al` from CPL3 and handles every exit.
void kvm_exit_floor_run(uint32_t iterations, kvm_exit_floor_result *result);

#endif

// The C floor: one VM, one vCPU, the TinyGuest long-mode layout, and a bare KVM_RUN loop.
#include "KVMExitFloor.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEMORY_SIZE 0x10000

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(kvm_exit_floor_result *r, const char *what) {
    r->error = errno ? errno : -1;
    snprintf(r->message, sizeof(r->message), "%s: %s", what, strerror(errno));
}

static void put64(uint8_t *memory, uint64_t address, uint64_t value) { memcpy(memory + address, &value, 8); }

static void set_cpuid(int kvm, int vcpu) {
    int n = 256;
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + n * sizeof(struct kvm_cpuid_entry2));
    cpuid->nent = n;
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) == 0) ioctl(vcpu, KVM_SET_CPUID2, cpuid);
    free(cpuid);
}

void kvm_exit_floor_run(uint32_t iterations, kvm_exit_floor_result *r) {
    memset(r, 0, sizeof(*r));
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) { fail(r, "open /dev/kvm"); return; }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) { fail(r, "KVM_CREATE_VM"); close(kvm); return; }
    uint8_t *memory = mmap(NULL, MEMORY_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct kvm_userspace_memory_region region = { .slot = 0, .guest_phys_addr = 0, .memory_size = MEMORY_SIZE, .userspace_addr = (uint64_t)memory };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) { fail(r, "KVM_SET_USER_MEMORY_REGION"); goto out_vm; }
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) { fail(r, "KVM_CREATE_VCPU"); goto out_vm; }
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    set_cpuid(kvm, vcpu);

    // GDT, page tables, the CPL0 stub that drops to CPL3, and the user loop (TinyGuest's layout).
    const uint64_t gdt[] = { 0, 0x00AF9B000000FFFFull, 0x00CF93000000FFFFull, 0x00AFFB000000FFFFull, 0x00CFF3000000FFFFull };
    for (int i = 0; i < 5; i++) put64(memory, 0x500 + i * 8, gdt[i]);
    put64(memory, 0x9000, 0xA000 | 7);
    put64(memory, 0xA000, 0xB000 | 7);
    put64(memory, 0xB000, 0x87);
    // push 0x23; push 0x8000; push 0x3002; push 0x1b; push 0x2000; iretq
    const uint8_t stub[] = { 0x6A, 0x23, 0x68, 0x00, 0x80, 0x00, 0x00, 0x68, 0x02, 0x30, 0x00, 0x00,
                             0x6A, 0x1B, 0x68, 0x00, 0x20, 0x00, 0x00, 0x48, 0xCF };
    // mov ecx, edi; 1: out 0x10, al; dec ecx; jnz 1b; out 0x11, al; 2: jmp 2b
    const uint8_t loop[] = { 0x89, 0xF9, 0xE6, 0x10, 0xFF, 0xC9, 0x75, 0xFA, 0xE6, 0x11, 0xEB, 0xFE };
    memcpy(memory + 0x1000, stub, sizeof(stub));
    memcpy(memory + 0x2000, loop, sizeof(loop));

    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) { fail(r, "KVM_GET_SREGS"); goto out_vcpu; }
    struct kvm_segment code = { .base = 0, .limit = 0xFFFFFFFF, .selector = 0x08, .type = 0xB, .present = 1, .s = 1, .l = 1, .g = 1 };
    struct kvm_segment data = { .base = 0, .limit = 0xFFFFFFFF, .selector = 0x10, .type = 0x3, .present = 1, .s = 1, .db = 1, .g = 1 };
    sregs.cs = code;
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
    sregs.gdt.base = 0x500;
    sregs.gdt.limit = 5 * 8 - 1;
    sregs.cr3 = 0x9000;
    sregs.cr4 = 0x20;
    sregs.cr0 = 0x80000033;
    sregs.efer = 0x500;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) { fail(r, "KVM_SET_SREGS"); goto out_vcpu; }
    struct kvm_regs regs = { .rip = 0x1000, .rsp = 0x7000, .rflags = 2, .rdi = iterations };
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) { fail(r, "KVM_SET_REGS"); goto out_vcpu; }

    double start = now_seconds();
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR) continue;
            fail(r, "KVM_RUN");
            break;
        }
        if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
            if (run->io.port == 0x10) { r->exits++; continue; }
            if (run->io.port == 0x11) break;
        }
        errno = 0;
        snprintf(r->message, sizeof(r->message), "unexpected exit reason %u", run->exit_reason);
        r->error = -1;
        break;
    }
    r->seconds = now_seconds() - start;
out_vcpu:
    munmap(run, run_size);
    close(vcpu);
out_vm:
    munmap(memory, MEMORY_SIZE);
    close(vm);
    close(kvm);
}

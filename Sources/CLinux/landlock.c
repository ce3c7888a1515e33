// The Landlock shims declared in landlock_shims.h.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include "landlock_shims.h"

// The system call numbers are the same on x86-64 and AArch64 (the generic table); older
// headers may lack the names.
#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#endif
#ifndef __NR_landlock_add_rule
#define __NR_landlock_add_rule 445
#endif
#ifndef __NR_landlock_restrict_self
#define __NR_landlock_restrict_self 446
#endif

// The first field of struct landlock_ruleset_attr; the kernel accepts a shorter structure
// than its own (the fields added later, handled_access_net and scoped, then count as zero).
struct clinux_landlock_ruleset_attr_fs {
    uint64_t handled_access_fs;
};

// struct landlock_path_beneath_attr, packed as the kernel declares it.
struct clinux_landlock_path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

enum { clinux_landlock_create_ruleset_version = 1, clinux_landlock_rule_path_beneath = 1 };

int clinux_landlock_abi_version(void) {
    return (int)syscall(__NR_landlock_create_ruleset, NULL, (size_t)0, (uint32_t)clinux_landlock_create_ruleset_version);
}

int clinux_landlock_create_ruleset(uint64_t handled_access_fs) {
    struct clinux_landlock_ruleset_attr_fs attr = { .handled_access_fs = handled_access_fs };
    return (int)syscall(__NR_landlock_create_ruleset, &attr, sizeof(attr), (uint32_t)0);
}

int clinux_landlock_add_path_rule(int ruleset_fd, int parent_fd, uint64_t allowed_access) {
    struct clinux_landlock_path_beneath_attr attr = { .allowed_access = allowed_access, .parent_fd = parent_fd };
    return (int)syscall(__NR_landlock_add_rule, ruleset_fd, clinux_landlock_rule_path_beneath, &attr, (uint32_t)0);
}

int clinux_landlock_restrict_self(int ruleset_fd) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    return (int)syscall(__NR_landlock_restrict_self, ruleset_fd, (uint32_t)0);
}

int clinux_o_path(void) { return O_PATH; }

static _Thread_local uint64_t clinux_landlock_mark;

uint64_t clinux_landlock_thread_mark(void) { return clinux_landlock_mark; }
void clinux_landlock_set_thread_mark(uint64_t mark) { clinux_landlock_mark = mark; }

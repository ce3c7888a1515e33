// Landlock (landlock(7)): the three system calls, which glibc does not wrap, as plain
// functions (landlock.c). The distribution's <linux/landlock.h> may predate the access
// rights a newer kernel knows, so the Swift side names the rights itself; these shims only
// carry numbers and descriptors across.
#ifndef CLINUX_LANDLOCK_SHIMS_H
#define CLINUX_LANDLOCK_SHIMS_H

#include <stdint.h>

/// The highest Landlock ABI version the running kernel supports
/// (`landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`), or -1 with `errno`:
/// `ENOSYS` when the kernel was built without Landlock, `EOPNOTSUPP` when it is disabled at boot.
int clinux_landlock_abi_version(void);

/// Creates a ruleset that handles the filesystem access rights `handled_access_fs`
/// (`landlock_create_ruleset` with a `struct landlock_ruleset_attr` holding only that field).
/// Returns the ruleset's descriptor (close-on-exec), or -1 with `errno`.
int clinux_landlock_create_ruleset(uint64_t handled_access_fs);

/// Adds a `LANDLOCK_RULE_PATH_BENEATH` rule: `allowed_access` on the file or directory tree
/// that `parent_fd` (preferably opened with `O_PATH`) names. Returns 0, or -1 with `errno`.
int clinux_landlock_add_path_rule(int ruleset_fd, int parent_fd, uint64_t allowed_access);

/// Sets `PR_SET_NO_NEW_PRIVS` on the calling thread (required unless it has `CAP_SYS_ADMIN`),
/// then enforces the ruleset on it (`landlock_restrict_self`). Only the calling thread and the
/// threads it starts afterwards are restricted. Returns 0, or -1 with `errno`.
int clinux_landlock_restrict_self(int ruleset_fd);

/// The `O_PATH` open flag (a GNU extension Swift's Glibc module hides): a descriptor that only
/// names a file, for `clinux_landlock_add_path_rule`.
int clinux_o_path(void);

/// A per-thread number the caller may set (thread-local storage; 0 in a new thread): which
/// ruleset the calling thread enforced last, so that it is not enforced twice.
uint64_t clinux_landlock_thread_mark(void);

/// Sets the calling thread's mark.
void clinux_landlock_set_thread_mark(uint64_t mark);

#endif

// libseccomp for the Seccomp module: builds BPF filters from syscall allow-lists.
#include <seccomp.h>

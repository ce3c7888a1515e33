// libFuzzer's documented entry for programs that keep their own main (compiler-rt's
// FuzzerDriver.cpp exports it; `-sanitize=fuzzer` links it in).
#pragma once
#include <stddef.h>
#include <stdint.h>

/// Parses libFuzzer's flags from argc/argv and fuzzes `callback`; returns the exit status.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

// What the benchmark executables share: a monotonic clock and the way they give up.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The monotonic clock in seconds (`CLOCK_MONOTONIC`), for timing a benchmark's loops.
public func now() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// Writes `tool: message` to standard error at once and exits with status 2: a benchmark's
/// usage error or a set-up that failed (no figure is printed then).
public func fail(tool: String, _ message: String) -> Never {
    let line = Array("\(tool): \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}

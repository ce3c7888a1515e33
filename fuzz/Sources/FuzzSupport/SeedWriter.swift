import Glibc

/// Writes a target's seed corpus when asked, from inputs the target builds with the real types.
///
/// ``FuzzDriver/run(seeds:_:)`` calls ``writeIfRequested(_:)`` first: with
/// `FUZZ_WRITE_SEEDS=<dir>` in the environment the binary writes `seed-<n>` files there and
/// exits instead of fuzzing (Scripts/fuzz.sh --write-seeds regenerates fuzz/corpus that way).
public enum SeedWriter {
    /// The environment variable naming the directory to write seeds into.
    public static let environmentVariable = "FUZZ_WRITE_SEEDS"

    /// Writes `seeds()` and exits when ``environmentVariable`` is set; returns otherwise.
    public static func writeIfRequested(_ seeds: () -> [[UInt8]]) {
        guard let pointer = getenv(environmentVariable) else { return }
        let directory = String(cString: pointer)
        mkdir(directory, 0o755)
        for (index, seed) in seeds().enumerated() {
            let path = directory + "/seed-\(index)"
            guard let file = fopen(path, "wb") else {
                fail("cannot create \(path): \(String(cString: strerror(errno)))")
            }
            let written = seed.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
            fclose(file)
            guard written == seed.count else { fail("short write to \(path): \(written) of \(seed.count) bytes") }
        }
        exit(0)
    }

    private static func fail(_ message: String) -> Never {
        let line = Array("seed writer: \(message)\n".utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        exit(1)
    }
}

/// Stops the fuzzer with `message` when an invariant of the code under test does not hold:
/// libFuzzer reports the crash and saves the input, exactly as for a trap in the library.
public func fuzzCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                      file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError("invariant broken: \(message())", file: file, line: line) }
}

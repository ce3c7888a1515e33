import CFuzzerDriver
import Glibc

/// The `main` of every fuzz target.
///
/// SwiftPM links each executable with `--defsym main=<module>_main`, which libFuzzer's own
/// `main` cannot satisfy under `-parse-as-library`; so each target has a Swift `@main`
/// that calls ``run(seeds:_:)``, which hands control to libFuzzer's driver.
public enum FuzzDriver {
    /// The C signature of `LLVMFuzzerTestOneInput`.
    public typealias TestOneInput = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

    /// Writes the seed corpus when `FUZZ_WRITE_SEEDS` is set (see ``SeedWriter``),
    /// otherwise runs libFuzzer over `testOneInput` with the process arguments.
    public static func run(seeds: () -> [[UInt8]], _ testOneInput: TestOneInput) -> Never {
        SeedWriter.writeIfRequested(seeds)
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, testOneInput))
    }
}

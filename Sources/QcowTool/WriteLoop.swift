import ArgumentParser
import BlockStorage
import Glibc
import Qcow
import TestSupport

/// A hidden crash-test helper: random 4 KiB-granular writes, write-zeroes and discards on an
/// image until killed. Before each operation it appends `B serial kind offset length` to the
/// log; after each flush `F serial` (every operation up to `serial` is durable). The test
/// kills it with SIGKILL and checks the image against the log.
struct WriteLoop: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "write-loop", shouldDisplay: false)
    static let blockSize = CrashPattern.blockSize

    @Argument var image: String
    @Option var log: String
    @Option var seed: UInt64 = 1
    @Option(name: .customLong("first-serial")) var firstSerial: UInt64 = 1
    @Option(name: .customLong("operations")) var operations = Int.max

    func run() throws {
        let disk = try QcowImage(path: image, options: .init(backingFiles: true))
        let descriptor = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw BlockError.host(call: "open(\(log))", errno: errno) }
        func note(_ line: String) {
            let bytes = Array(line.utf8)
            _ = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        }
        var random = SplitMix64(seed: seed)
        let blocks = disk.size / UInt64(Self.blockSize)
        var serial = firstSerial
        for step in 0..<operations {
            let first = random.next() % blocks
            let count = min(1 + random.next() % 24, blocks - first)
            let kind = random.next() % 10
            let offset = first * UInt64(Self.blockSize), length = count * UInt64(Self.blockSize)
            note("B \(serial) \(kind < 8 ? "w" : kind == 8 ? "z" : "d") \(offset) \(length)\n")
            switch kind {
            case 8: try disk.writeZeroes(offset: offset, length: length, unmap: random.next() % 2 == 0)
            case 9: try disk.discard(offset: offset, length: length)
            default:
                var bytes: [UInt8] = []
                for block in first..<(first + count) { bytes += CrashPattern.block(serial: serial, block: block) }
                try disk.write(bytes: bytes, at: offset)
            }
            if step % 8 == 7 {
                try disk.flush()
                note("F \(serial)\n")
            }
            serial += 1
        }
        try disk.flush()
        note("F \(serial - 1)\n")
    }
}

import BlockStorage
import Foundation
import Qcow
import TestSupport
import Testing

/// A writer (qcow-tool's hidden write-loop) is killed with SIGKILL at random points; each
/// time qemu-img check must find no corruption (leaks are allowed) and every operation the
/// writer reported flushed must read back, while operations after the last flush may each
/// have landed or not, block by block.
@Suite("Crash safety under SIGKILL", .enabled(if: Qemu.available, Qemu.reason))
struct CrashSafetyTests {
    /// qcow-tool sits next to the test bundle in the build folder.
    static var tool: String {
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        return testBinary.deletingLastPathComponent().appendingPathComponent("qcow-tool").path
    }

    struct Operation {
        let serial: UInt64
        let kind: Character
        let firstBlock: Int
        let blocks: Int
    }

    /// The operations begun and the last flushed serial, from a writer's log.
    static func parseLog(_ path: String) throws -> (operations: [Operation], flushed: UInt64) {
        var operations: [Operation] = []
        var flushed: UInt64 = 0
        for line in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.first == "F", fields.count == 2, let serial = UInt64(fields[1]) {
                flushed = max(flushed, serial)
            } else if fields.first == "B", fields.count == 5, let serial = UInt64(fields[1]),
                      let offset = Int(fields[3]), let length = Int(fields[4]) {
                operations.append(Operation(serial: serial, kind: fields[2].first!, firstBlock: offset / CrashPattern.blockSize,
                                            blocks: length / CrashPattern.blockSize))
            }
        }
        return (operations, flushed)
    }

    @Test("Writes, write-zeroes and discards killed at random points leave a consistent image")
    func killedWriter() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.tool) else {
            Issue.record("qcow-tool is not built next to the tests (\(Self.tool)); run swift build --build-tests")
            return
        }
        let folder = try ScratchFolder()
        let path = folder.file("crash.qcow2")
        let size = 16 << 20
        try QcowImage.create(path: path, size: UInt64(size), clusterSize: 4096)
        let blockCount = size / CrashPattern.blockSize
        var baseline = [UInt64](repeating: 0, count: blockCount)
        var nextSerial: UInt64 = 1
        var random = SplitMix64(seed: 0xC0FFEE)
        for round in 0..<6 {
            let log = folder.file("log-\(round)")
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Self.tool)
            process.arguments = ["write-loop", path, "--log", log, "--seed", "\(round + 1)", "--first-serial", "\(nextSerial)"]
            let errors = Pipe()
            process.standardError = errors
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            usleep(UInt32(150_000 + random.next() % 300_000))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            let output = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(process.terminationReason == .uncaughtSignal, "the writer stopped by itself: \(output)")

            try Qemu.check(path, leaksAllowed: true)
            let (operations, flushed) = try Self.parseLog(log)
            #expect(flushed > 0 || operations.count < 8, "round \(round): the writer never flushed")
            // What must be there, and what may be there instead (operations after the last flush).
            var expected = baseline
            var alternatives = [Set<UInt64>](repeating: [], count: blockCount)
            for operation in operations {
                let value = operation.kind == "w" ? operation.serial : 0
                for block in operation.firstBlock..<(operation.firstBlock + operation.blocks) {
                    if operation.serial <= flushed { expected[block] = value } else { alternatives[block].insert(value) }
                }
            }
            let image = try QcowImage(path: path, options: .init(readOnly: true))
            let bytes = try image.readBytes(count: size, at: 0)
            var mismatches = 0
            for block in 0..<blockCount {
                let slice = bytes[(block * CrashPattern.blockSize)..<((block + 1) * CrashPattern.blockSize)]
                let actual = CrashPattern.serial(of: slice, block: UInt64(block))
                if let actual, actual == expected[block] || alternatives[block].contains(actual) {
                    baseline[block] = actual
                } else {
                    mismatches += 1
                    if mismatches <= 5 {
                        Issue.record("round \(round), block \(block): found \(actual.map(String.init) ?? "torn data"), expected \(expected[block]) or one of \(alternatives[block].sorted())")
                    }
                }
            }
            #expect(mismatches == 0)
            nextSerial = (operations.map(\.serial).max() ?? nextSerial) + 1
        }
        // The image still takes writes after all those crashes, and our own check agrees with qemu-img.
        let image = try QcowImage(path: path)
        try image.write(bytes: [UInt8](repeating: 1, count: 10_000), at: 12345)
        try image.flush()
        let report = try image.check()
        #expect(report.errors == 0, "\(report.messages)")
    }
}

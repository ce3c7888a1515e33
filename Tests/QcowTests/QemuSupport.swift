import Foundation
import TestSupport
import Testing

/// qemu-img and qemu-io (Debian's qemu-utils), the reference the Qcow module is checked against.
enum Qemu {
    static let img = find("qemu-img")
    static let io = find("qemu-io")
    /// Both tools are installed.
    static var available: Bool { img != nil && io != nil }
    /// `CH_REQUIRE_QEMU_IMG=1` (set by CI) turns missing tools into a failure instead of a skip.
    static var required: Bool { ProcessInfo.processInfo.environment["CH_REQUIRE_QEMU_IMG"] == "1" }
    static let reason: Comment = "skipped: qemu-img/qemu-io are not installed (apt-get install qemu-utils)"

    static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") + ["/usr/bin", "/usr/local/bin"] {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    struct Result {
        var status: Int32
        var output: String
    }

    /// Runs a tool and returns its exit status and combined output.
    @discardableResult
    static func run(_ tool: String?, _ arguments: [String], expect statuses: Set<Int32> = [0]) throws -> Result {
        guard let tool else { throw QemuMissing() }
        let result = try runProcess(tool, arguments)
        if !statuses.contains(result.status) {
            Issue.record("\(tool) \(arguments.joined(separator: " ")) exited \(result.status): \(result.output)")
        }
        return result
    }

    /// `qemu-img check`: no corruption, and no leaks unless `leaksAllowed`.
    static func check(_ path: String, leaksAllowed: Bool = false, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try run(img, ["check", "-f", "qcow2", path], expect: leaksAllowed ? [0, 3] : [0])
        #expect(result.output.contains("No errors were found") || (leaksAllowed && result.status == 3),
                "qemu-img check \(path): \(result.output)", sourceLocation: sourceLocation)
    }

    /// `qemu-img compare` of a raw file with a qcow2 image: identical contents.
    static func compare(raw: String, qcow2: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try run(img, ["compare", "-f", "raw", "-F", "qcow2", raw, qcow2], expect: [0])
        #expect(result.status == 0, "qemu-img compare: \(result.output)", sourceLocation: sourceLocation)
    }
}

struct QemuMissing: Error, CustomStringConvertible {
    var description: String { "qemu-img/qemu-io are not installed" }
}

/// Runs `tool` with `arguments`, returning its status and combined stdout/stderr.
func runProcess(_ tool: String, _ arguments: [String]) throws -> Qemu.Result {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Qemu.Result(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
}

/// A scratch folder removed when the object goes away.
final class ScratchFolder {
    let path: String

    /// A folder in memory (/dev/shm: fdatasync costs nothing there) unless `onDisk`.
    init(onDisk: Bool = false) throws {
        let memory = "/dev/shm/"
        let base = !onDisk && FileManager.default.isWritableFile(atPath: memory) ? memory : NSTemporaryDirectory()
        path = base + "qcow-test-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// The path of `name` inside the folder.
    func file(_ name: String) -> String { path + "/" + name }
}

/// Writes `bytes` to `path`.
func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// The bytes of `path`.
func readFile(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Deterministic disk contents: runs of random bytes, compressible text-like runs and zero
/// runs, `grain` bytes each (so that some clusters stay unallocated after qemu-img convert).
func diskPattern(count: Int, seed: UInt64, grain: Int = 4096, compressible: Bool = false) -> [UInt8] {
    var random = SplitMix64(seed: seed)
    var bytes = [UInt8](repeating: 0, count: count)
    var position = 0
    while position < count {
        let length = min(grain * Int(1 + random.next() % 4), count - position)
        switch random.next() % (compressible ? 3 : 4) {
        case 0:
            break // zeroes
        case 1 where compressible, 2 where compressible:
            let word = Array("qcow2 cluster \(random.next() % 100) ".utf8)
            for index in 0..<length { bytes[position + index] = word[index % word.count] }
        default:
            for index in stride(from: 0, to: length, by: 8) {
                let value = random.next()
                for byte in 0..<min(8, length - index) { bytes[position + index + byte] = UInt8(truncatingIfNeeded: value >> (8 * byte)) }
            }
        }
        position += length
    }
    return bytes
}

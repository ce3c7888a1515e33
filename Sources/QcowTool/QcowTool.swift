// qcow-tool: inspect, check, create and convert qcow2 images with the Qcow module.
import ArgumentParser
import BlockStorage
import Glibc
import Qcow

@main
struct QcowToolCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qcow-tool",
        abstract: "Inspect, check, create and convert qcow2 images.",
        subcommands: [Info.self, Check.self, Create.self, Convert.self, WriteLoop.self])
}

/// Parses sizes like 1048576, 512K, 64M, 10G, 1T.
func parseSize(_ text: String) throws -> UInt64 {
    let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var digits = text.uppercased()
    var multiplier: UInt64 = 1
    if digits.hasSuffix("B") { digits.removeLast() }
    if let last = digits.last, let unit = units[last] {
        multiplier = unit
        digits.removeLast()
    }
    guard let value = UInt64(digits), value.multipliedReportingOverflow(by: multiplier).overflow == false else {
        throw ValidationError("'\(text)' is not a size (a number of bytes, optionally with K, M, G or T)")
    }
    return value * multiplier
}

/// Quotes `text` as a JSON string.
func json(_ text: String?) -> String {
    guard let text else { return "null" }
    var quoted = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": quoted += "\\\""
        case "\\": quoted += "\\\\"
        case "\n": quoted += "\\n"
        default:
            if scalar.value < 0x20 { quoted += "\\u00" + (scalar.value < 16 ? "0" : "") + String(scalar.value, radix: 16) } else { quoted.unicodeScalars.append(scalar) }
        }
    }
    return quoted + "\""
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a JSON summary of a qcow2 image.")
    @Argument(help: "The qcow2 image.") var image: String

    func run() throws {
        let disk = try QcowImage(path: image, options: .init(readOnly: true, backingFiles: true, lock: .none))
        let info = try disk.info()
        print("""
        {
          "filename": \(json(image)),
          "format": "qcow2",
          "version": \(info.version),
          "virtual-size": \(info.virtualSize),
          "cluster-size": \(info.clusterSize),
          "refcount-bits": \(info.refcountBits),
          "backing-filename": \(json(info.backingFile)),
          "backing-format": \(json(info.backingFormat)),
          "snapshots": \(info.snapshots),
          "allocated-clusters": \(info.allocatedClusters),
          "compressed-clusters": \(info.compressedClusters),
          "zero-clusters": \(info.zeroClusters),
          "l2-tables": \(info.l2Tables),
          "file-length": \(info.fileLength)
        }
        """)
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check refcount consistency (exit 0: clean, 2: corruption, 3: leaked clusters only, as qemu-img check).")
    @Argument(help: "The qcow2 image.") var image: String

    func run() throws {
        let disk = try QcowImage(path: image, options: .init(readOnly: true, backingFiles: true, lock: .none))
        let report = try disk.check()
        for message in report.messages { print(message) }
        if report.errors > 0 {
            print("\(report.errors) errors were found on the image; data may be corrupted.")
        }
        if report.leaks > 0 { print("\(report.leaks) leaked clusters were found on the image (space is wasted, no harm).") }
        if report.isClean { print("No errors were found on the image.") }
        print("\(report.referencedClusters) clusters are referenced.")
        if report.errors > 0 { throw ExitCode(2) }
        if report.leaks > 0 { throw ExitCode(3) }
    }
}

struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a qcow2 (version 3) image.")
    @Argument(help: "The image to create (overwritten if it exists).") var image: String
    @Argument(help: "The virtual size (bytes, or with K, M, G, T); defaults to the backing file's size.") var size: String?
    @Option(name: .customLong("cluster-size"), help: "The cluster size, 512 to 2M.") var clusterSize = "64K"
    @Option(name: [.customShort("b"), .long], help: "The backing file (relative names are relative to the image's folder).")
    var backing: String?
    @Option(name: [.customShort("F"), .customLong("backing-format")], help: "The backing file's format: raw or qcow2.")
    var backingFormat: String?

    func run() throws {
        var format: ImageFormat?
        if let backingFormat {
            guard let parsed = ImageFormat(rawValue: backingFormat) else {
                throw ValidationError("--backing-format must be raw or qcow2, not '\(backingFormat)'")
            }
            format = parsed
        }
        let cluster = try parseSize(clusterSize)
        guard cluster <= 2 << 20 else { throw ValidationError("--cluster-size must be from 512 to 2M") }
        try QcowImage.create(path: image, size: try size.map(parseSize), clusterSize: Int(cluster), backing: backing,
                             backingFormat: format)
    }
}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Convert an image (raw or qcow2, with its backing chain) to a raw file.")
    @Argument(help: "The source image.") var source: String
    @Argument(help: "The raw file to write (created or truncated; zero runs stay holes).") var target: String
    @Option(name: [.customShort("f"), .customLong("format")], help: "The source format (raw or qcow2); probed by default.")
    var format: String?

    func run() throws {
        var forced: ImageFormat?
        if let format {
            guard let parsed = ImageFormat(rawValue: format) else { throw ValidationError("--format must be raw or qcow2, not '\(format)'") }
            forced = parsed
        }
        let disk = try DiskImage.open(path: source, options: .init(format: forced, readOnly: true, backingFiles: true))
        let descriptor = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw BlockError.host(call: "open(\(target))", errno: errno) }
        defer { close(descriptor) }
        guard ftruncate(descriptor, off_t(disk.size)) == 0 else { throw BlockError.host(call: "ftruncate(\(target))", errno: errno) }
        let chunk = 2 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        var offset: UInt64 = 0
        while offset < disk.size {
            let count = Int(min(UInt64(chunk), disk.size - offset))
            try buffer.withUnsafeMutableBytes { raw in
                try disk.read(into: [UnsafeMutableRawBufferPointer(rebasing: raw[0..<count])], at: offset)
            }
            if buffer[0..<count].contains(where: { $0 != 0 }) {
                var done = 0
                while done < count {
                    let written = buffer.withUnsafeBytes { raw in pwrite(descriptor, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done)) }
                    if written < 0 {
                        if errno == EINTR { continue }
                        throw BlockError.host(call: "pwrite(\(target))", errno: errno)
                    }
                    done += written
                }
            }
            offset += UInt64(count)
        }
        guard fsync(descriptor) == 0 else { throw BlockError.host(call: "fsync(\(target))", errno: errno) }
    }
}

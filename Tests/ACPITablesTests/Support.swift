import ACPITables
import Foundation
import Testing

/// The little-endian integer of `type` at `offset` in `bytes`.
func load<T: FixedWidthInteger>(_ type: T.Type, _ bytes: [UInt8], at offset: Int) -> T {
    var value: T = 0
    for index in 0..<(T.bitWidth / 8) { value |= T(bytes[offset + index]) << (8 * index) }
    return value
}

/// The text of `count` bytes at `offset`.
func text(_ bytes: [UInt8], at offset: Int, count: Int) -> String {
    String(decoding: bytes[offset..<(offset + count)], as: UTF8.self)
}

/// The bytes of a hexadecimal string such as `"5B 82 0B"` (spaces ignored).
func hexBytes(_ string: String) -> [UInt8] {
    let digits = string.filter { !$0.isWhitespace }
    var result: [UInt8] = []
    var index = digits.startIndex
    while index < digits.endIndex {
        let next = digits.index(index, offsetBy: 2)
        result.append(UInt8(digits[index..<next], radix: 16)!)
        index = next
    }
    return result
}

/// Where an acpica-tools program lives, or `nil` when it is not installed.
func acpicaTool(_ name: String) -> String? {
    ["/usr/bin/", "/usr/local/bin/", "/bin/"].map { $0 + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// Where `iasl` lives, or `nil` when acpica-tools is not installed.
let iaslPath = acpicaTool("iasl")
/// Where `acpiexec` lives, or `nil` when acpica-tools is not installed.
let acpiexecPath = acpicaTool("acpiexec")

/// The result of one acpica-tools run.
struct ToolResult {
    let status: Int32
    let output: String
}

/// Runs `iasl` with `arguments` in `directory`, collecting stdout and stderr.
func runIASL(_ arguments: [String], in directory: URL) throws -> ToolResult {
    try runTool(iaslPath!, arguments, in: directory)
}

/// The DSDT of `set` disassembled by `iasl -d`: iasl's result and the ASL text it wrote.
func disassembledDSDT(_ set: ACPITableSet) throws -> (result: ToolResult, asl: String) {
    let directory = try makeTemporaryDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    try Data(try #require(set.table("DSDT")).bytes).write(to: directory.appendingPathComponent("dsdt.dat"))
    let result = try runIASL(["-d", "dsdt.dat"], in: directory)
    let asl = (try? String(contentsOf: directory.appendingPathComponent("dsdt.dsl"), encoding: .utf8)) ?? ""
    return (result, asl)
}

/// Runs the program at `path` with `arguments` in `directory`, collecting stdout and stderr.
func runTool(_ path: String, _ arguments: [String], in directory: URL) throws -> ToolResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    process.currentDirectoryURL = directory
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return ToolResult(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
}

/// A fresh temporary directory, removed by the caller.
func makeTemporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("acpi-tables-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

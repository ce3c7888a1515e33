// fuzz-aml: the ACPI builders. The decode-like parts round-trip (ASL name paths, EISA IDs,
// PkgLength encodings); then a whole table set is built from fuzzed parameters (APIC IDs,
// ports, PCI segments, a GED, extra AML objects with fuzzed names and data) and every table
// it accepts must be well formed: lengths, checksums, alignment, no overlap, XSDT pointers.
import ACPITables
import FuzzSupport

@main
enum AMLFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

private func text(_ input: inout FuzzInput, _ maxCount: Int) -> String { String(decoding: input.run(maxCount: maxCount), as: UTF8.self) }

/// Decodes a PkgLength at the start of `bytes`: (value, bytes used).
private func decodePackageLength(_ bytes: [UInt8]) -> (Int, Int) {
    let following = Int(bytes[0] >> 6)
    guard following > 0 else { return (Int(bytes[0] & 0x3f), 1) }
    var value = Int(bytes[0] & 0x0f)
    for index in 1...following { value |= Int(bytes[index]) << (4 + 8 * (index - 1)) }
    return (value, following + 1)
}

/// A small AML object built from the input, or nil when the input names something invalid.
private func object(_ input: inout FuzzInput, depth: Int = 0) -> (any AMLConvertible)? {
    switch input.byte() % 6 {
    case 0: return AML.Integer(input.integer(UInt64.self))
    case 1: return try? AML.StringConstant(text(&input, 40))
    case 2: return AML.Buffer(input.run(maxCount: 64))
    case 3 where depth < 3:
        return AML.Package((0..<Int(input.byte() % 5)).compactMap { _ in object(&input, depth: depth + 1) })
    case 4: return try? AML.EISAID(text(&input, 8))
    default:
        guard let name = try? AML.NameString(text(&input, 20)) else { return nil }
        let body = (0..<Int(input.byte() % 3)).compactMap { _ in object(&input, depth: depth + 1) }
        return input.bool() ? AML.Method(name, arguments: input.byte() % 8, serialized: input.bool(), body.map { AML.Return($0) })
            : AML.Device(name, body.enumerated().map { AML.Name(try! AML.NameString("V00\($0.offset)"), $0.element) })
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        if let path = try? AML.NameString(text(&input, 60)) {
            fuzzCheck((try? AML.NameString(path.description)) == path, "name path \(path) does not parse back")
        }
        if let id = try? AML.EISAID(text(&input, 8)) {
            let value = id.value.byteSwapped
            let letters = [26, 21, 16].map { Character(Unicode.Scalar(UInt8((value >> $0) & 0x1f) + 0x40)) }
            let digits = String(value & 0xffff, radix: 16, uppercase: true)
            let decoded = String(letters) + String(repeating: "0", count: 4 - digits.count) + digits
            fuzzCheck(decoded == id.text.uppercased(), "EISA ID \(id.text) encodes as \(decoded)")
        }
        let content = Int(input.integer(UInt32.self)) % (AML.maximumPackageLength - 3)
        let encoded = AML.packageLength(contentLength: content)
        let (value, used) = decodePackageLength(encoded)
        fuzzCheck(used == encoded.count && value == content + used, "PkgLength of \(content) decodes as \(value)")

        var configuration = ACPIConfiguration(apicIDs: [])
        configuration.apicIDs = (0..<(1 + Int(input.byte()))).map { index in input.bool() ? UInt32(index) : UInt32(input.byte()) }
        configuration.serialPort = input.bool()
        configuration.shutdownPort = input.integer(UInt16.self)
        configuration.pmTimerPort = input.bool() ? input.integer(UInt16.self) : nil
        configuration.ioapicID = input.byte()
        configuration.ioapicAddress = input.integer(UInt32.self)
        configuration.pciSegments = (0..<Int(input.byte() % 3)).map { _ in
            MCFG.Allocation(baseAddress: input.integer(UInt64.self), segment: input.integer(UInt16.self),
                            startBus: input.byte(), endBus: input.byte())
        }
        if input.bool() {
            configuration.genericEventDevice = .init(address: input.integer(UInt64.self), irq: input.integer(UInt32.self),
                                                     events: .init(rawValue: input.byte()))
        }
        configuration.additionalDefinitions = (0..<Int(input.byte() % 4)).compactMap { _ in object(&input) }
        let rsdp = input.bool() ? 0xa0000 : input.integer(UInt64.self)
        guard let set = try? ACPITableSet.build(configuration, rsdpAddress: rsdp) else { return }
        check(set)
    }
}

/// The 64-bit little-endian value at `offset`.
private func littleEndian(_ bytes: [UInt8], at offset: Int) -> UInt64 {
    var value: UInt64 = 0
    for index in 0..<8 { value |= UInt64(bytes[offset + index]) << (8 * UInt64(index)) }
    return value
}

/// Header lengths and checksums, the RSDP's two checksums, placement, and the XSDT's pointers.
private func check(_ set: ACPITableSet) {
    var end = set.rsdpAddress
    for table in set.tables {
        fuzzCheck(table.address >= end && table.address % ACPITableSet.tableAlignment == 0, "\(table.signature) misplaced")
        end = table.address + UInt64(table.bytes.count)
        let sum = table.bytes.reduce(UInt8(0), &+)
        if table.signature == "RSD PTR " {
            fuzzCheck(table.bytes.prefix(20).reduce(UInt8(0), &+) == 0 && sum == 0, "RSDP checksums are wrong")
            continue
        }
        let length = Int(truncatingIfNeeded: littleEndian(table.bytes + [0, 0, 0, 0], at: 4) & 0xffff_ffff)
        fuzzCheck(length == table.bytes.count, "\(table.signature) says \(length) bytes but has \(table.bytes.count)")
        fuzzCheck(sum == 0, "\(table.signature) checksum is wrong")
    }
    guard let xsdt = set.table("XSDT") else { return fuzzCheck(false, "no XSDT") }
    let pointers: [UInt64] = stride(from: 36, to: xsdt.bytes.count, by: 8).map { base in littleEndian(xsdt.bytes, at: base) }
    let expected = set.tables.filter { !["RSD PTR ", "DSDT", "XSDT"].contains($0.signature) }.map(\.address)
    fuzzCheck(pointers == expected, "XSDT points at \(pointers), tables are at \(expected)")
}

/// One vCPU with defaults; four vCPUs with a PCI segment, a GED and a named package.
private func seeds() -> [[UInt8]] {
    var small = FuzzInputBuilder()
    small.run(Array("\\_SB_.PCI0".utf8), maxCount: 60)
    small.run(Array("PNP0A08".utf8), maxCount: 8)
    small.integer(UInt32(100))
    small.append([0, 1, 1, 0xf8, 0x03, 0, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 1])
    var larger = FuzzInputBuilder()
    larger.run(Array("^^FOO.BAR".utf8), maxCount: 60)
    larger.run(Array("ACPI0013".utf8), maxCount: 8)
    larger.integer(UInt32(70000))
    larger.append([3, 1, 1, 1, 1, 1, 0x00, 0x06, 1, 0x08, 0x06, 1, 0x00, 0x00, 0xc0, 0xfe, 1])
    larger.integer(UInt64(0xe800_0000))
    larger.append([0, 0, 0, 0, 1])
    larger.integer(UInt64(0xfed0_0000))
    larger.integer(UInt32(5))
    larger.append([0x0f, 1, 3, 5])
    larger.run(Array("PKG0".utf8), maxCount: 20)
    larger.append([0, 0, 1, 2, 4, 3, 1, 1])
    return [small.bytes, larger.bytes]
}

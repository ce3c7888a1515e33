import GuestMemory
@testable import Arch

/// 64 MiB of RAM from address 0 (anonymous, lazily backed).
func makeRAM(_ size: UInt64 = 64 << 20) throws -> GuestMemory {
    try GuestMemory.anonymous([(start: GuestAddress(0), size: size)])
}

/// Little-endian field helpers for building and checking images in tests.
extension Array where Element == UInt8 {
    mutating func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        let width = T.bitWidth / 8
        if count < offset + width { append(contentsOf: Array(repeating: 0, count: offset + width - count)) }
        for index in 0..<width { self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }

    func get<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        loadLittleEndian(type, at: offset)!
    }
}

/// Reads a little-endian integer from guest memory.
func read<T: FixedWidthInteger>(_ memory: GuestMemory, _ type: T.Type, at address: UInt64) throws -> T {
    try memory.read(type, at: GuestAddress(address))
}

/// A tiny ELF64 writer for tests: a header, a program header table right after it, and
/// each segment's bytes after that (16-byte aligned).
struct TestELF {
    struct Segment {
        var type: UInt32 = 1
        var physicalAddress: UInt64 = 0x100000
        var virtualAddress: UInt64? = nil
        var bytes: [UInt8] = []
        var memorySize: UInt64? = nil
        var align: UInt64 = 0x1000
        /// Overrides of the encoded file offset / size (for malformed images).
        var fileOffset: UInt64? = nil
        var fileSize: UInt64? = nil
    }

    var elfClass: UInt8 = 2
    var dataEncoding: UInt8 = 1
    var fileType: UInt16 = 2
    var machine: UInt16 = 62
    var entry: UInt64 = 0x100000
    var programHeaderSize: UInt16 = 56
    var programHeaderOffset: UInt64? = nil
    var segments: [Segment] = []

    func build() -> [UInt8] {
        var image = [UInt8](repeating: 0, count: 64)
        image[0] = 0x7F; image[1] = 0x45; image[2] = 0x4C; image[3] = 0x46
        image[4] = elfClass; image[5] = dataEncoding; image[6] = 1
        image.put(fileType, at: 16)
        image.put(machine, at: 18)
        image.put(UInt32(1), at: 20)
        image.put(entry, at: 24)
        image.put(programHeaderOffset ?? 64, at: 32)
        image.put(UInt16(64), at: 52)
        image.put(programHeaderSize, at: 54)
        image.put(UInt16(segments.count), at: 56)
        var dataOffset = 64 + segments.count * 56
        var offsets: [Int] = []
        for segment in segments {
            dataOffset = (dataOffset + 15) & ~15
            offsets.append(dataOffset)
            dataOffset += segment.bytes.count
        }
        image.append(contentsOf: Array(repeating: 0, count: max(0, dataOffset - image.count)))
        for (index, segment) in segments.enumerated() {
            let base = 64 + index * 56
            image.put(segment.type, at: base)
            image.put(UInt32(5), at: base + 4)
            image.put(segment.fileOffset ?? UInt64(offsets[index]), at: base + 8)
            image.put(segment.virtualAddress ?? segment.physicalAddress, at: base + 16)
            image.put(segment.physicalAddress, at: base + 24)
            image.put(segment.fileSize ?? UInt64(segment.bytes.count), at: base + 32)
            image.put(segment.memorySize ?? UInt64(segment.bytes.count), at: base + 40)
            image.put(segment.align, at: base + 48)
            for (position, byte) in segment.bytes.enumerated() { image[offsets[index] + position] = byte }
        }
        return image
    }

    /// One ELF note: header, name (NUL terminated, padded to 4), descriptor (padded to 4).
    static func note(name: String, type: UInt32, descriptor: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = []
        let nameBytes = Array(name.utf8) + [0]
        bytes.put(UInt32(nameBytes.count), at: 0)
        bytes.put(UInt32(descriptor.count), at: 4)
        bytes.put(type, at: 8)
        bytes += nameBytes + Array(repeating: 0, count: (4 - nameBytes.count % 4) % 4)
        bytes += descriptor + Array(repeating: 0, count: (4 - descriptor.count % 4) % 4)
        return bytes
    }

    /// The PVH entry note with a 4- or 8-byte descriptor.
    static func pvhNote(entry: UInt64, descriptorSize: Int) -> [UInt8] {
        var descriptor: [UInt8] = []
        if descriptorSize == 4 { descriptor.put(UInt32(truncatingIfNeeded: entry), at: 0) } else { descriptor.put(entry, at: 0) }
        return note(name: "Xen", type: 18, descriptor: descriptor)
    }
}

/// A tiny bzImage for tests: setup sectors with a boot-protocol header, then a payload.
struct TestBzImage {
    var setupSectors: UInt8 = 1
    var version: UInt16 = 0x020F
    var bootFlag: UInt16 = 0xAA55
    var magic: UInt32 = 0x5372_6448
    var loadFlags: UInt8 = 0x01
    var xLoadFlags: UInt16 = 0x0001
    var code32Start: UInt32 = 0x100000
    var relocatable: UInt8 = 1
    var kernelAlignment: UInt32 = 0x200000
    var preferredAddress: UInt64 = 0x100000
    var initSize: UInt32 = 0x10000
    var initrdAddressMax: UInt32 = 0x7FFF_FFFF
    var commandLineSize: UInt32 = 2047
    var payload: [UInt8] = Array(repeating: 0x90, count: 0x3000)
    var sysSize: UInt32? = nil

    func build() -> [UInt8] {
        let sectors = setupSectors == 0 ? 4 : Int(setupSectors)
        var image = [UInt8](repeating: 0, count: (sectors + 1) * 512)
        image[0x1F1] = setupSectors
        image.put(sysSize ?? UInt32((payload.count + 15) / 16), at: 0x1F4)
        image.put(bootFlag, at: 0x1FE)
        image.put(UInt16(0x66EB), at: 0x200)
        image.put(magic, at: 0x202)
        image.put(version, at: 0x206)
        image[0x211] = loadFlags
        image.put(code32Start, at: 0x214)
        image.put(initrdAddressMax, at: 0x22C)
        image.put(kernelAlignment, at: 0x230)
        image[0x234] = relocatable
        image.put(xLoadFlags, at: 0x236)
        image.put(commandLineSize, at: 0x238)
        image.put(preferredAddress, at: 0x258)
        image.put(initSize, at: 0x260)
        return image + payload
    }
}

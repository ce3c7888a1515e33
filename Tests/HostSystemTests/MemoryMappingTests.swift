import CLinux
import Glibc
import HostSystem
import Testing

extension HostSystemTests {
    @Suite struct MemoryMappingTests {
        @Test func anonymousMemoryIsZeroFilledAndWritable() throws {
            let size = 2 * MemoryMapping.pageSize
            let mapping = try MemoryMapping(anonymous: size)
            #expect(mapping.size == size)
            #expect(mapping.file == nil)
            #expect(mapping.bytes.allSatisfy { $0 == 0 })
            for index in stride(from: 0, to: size, by: 511) { mapping.bytes[index] = UInt8(truncatingIfNeeded: index) }
            for index in stride(from: 0, to: size, by: 511) { #expect(mapping.bytes[index] == UInt8(truncatingIfNeeded: index)) }
        }

        @Test func sharedFileMappingIsVisibleThroughTheFile() throws {
            let page = MemoryMapping.pageSize
            let file = try temporaryFile()
            try file.truncate(to: Int64(page))
            let mapping = try MemoryMapping(file: file, size: page)
            #expect(mapping.options.contains(.shared))

            let text = Array("guest ram".utf8)
            for (index, byte) in text.enumerated() { mapping.bytes[100 + index] = byte }
            var buffer = [UInt8](repeating: 0, count: text.count)
            let count = try buffer.withUnsafeMutableBytes { (bytes) throws(SystemError) in try file.read(into: bytes, at: 100) }
            #expect(count == text.count)
            #expect(buffer == text)

            _ = try [0xAB].withUnsafeBytes { (bytes) throws(SystemError) in try file.write(bytes, at: 7) }
            #expect(mapping.bytes[7] == 0xAB)
        }

        @Test func largeNoReserveMappingSucceeds() throws {
            let size = 64 << 30
            let mapping = try MemoryMapping(anonymous: size, options: [.noReserve])
            #expect(mapping.size == size)
            mapping.bytes[0] = 1
            mapping.bytes[size - 1] = 2
            #expect(mapping.bytes[0] == 1 && mapping.bytes[size - 1] == 2)
        }

        @Test func readOnlyMappingIsMappedWithoutWrite() throws {
            let mapping = try MemoryMapping(anonymous: MemoryMapping.pageSize, options: [.readOnly])
            #expect(mapping.bytes[0] == 0)
            let start = String(UInt(bitPattern: mapping.baseAddress), radix: 16)
            let maps = try readWholeFile("/proc/self/maps")
            let line = maps.split(separator: "\n").first { $0.hasPrefix(start + "-") }
            let permissions = line?.split(separator: " ").dropFirst().first
            #expect(permissions == "r--p")
        }

        @Test func anonymousMappingsOfAHugePageOrMoreStartOnAHugePageBoundary() throws {
            // Several in a row, so that one that happens to land aligned proves nothing alone.
            var mappings: [MemoryMapping] = []
            for extra in [0, MemoryMapping.pageSize, 3 * MemoryMapping.pageSize] {
                let mapping = try MemoryMapping(anonymous: MemoryMapping.hugePageSize * 3 + extra, options: [.noReserve])
                #expect(UInt(bitPattern: mapping.baseAddress) % UInt(MemoryMapping.hugePageSize) == 0)
                mapping.bytes[0] = 1
                mapping.bytes[mapping.size - 1] = 2
                #expect(mapping.bytes[0] == 1 && mapping.bytes[mapping.size - 1] == 2)
                mappings.append(mapping)
            }
            // The trimmed head and tail are gone: /proc/self/maps lists exactly the range.
            let maps = try readWholeFile("/proc/self/maps")
            for mapping in mappings {
                let start = UInt(bitPattern: mapping.baseAddress)
                let range = String(start, radix: 16) + "-" + String(start + UInt(mapping.size), radix: 16)
                let covering = maps.split(separator: "\n").contains { line in
                    let bounds = line.split(separator: " ")[0].split(separator: "-").compactMap { UInt($0, radix: 16) }
                    return bounds.count == 2 && bounds[0] <= start && bounds[1] >= start + UInt(mapping.size)
                }
                #expect(covering, "no mapping covers \(range)")
            }
        }

        @Test func sizeZeroIsRefused() {
            let error = #expect(throws: SystemError.self) { _ = try MemoryMapping(anonymous: 0) }
            #expect(error?.errno == EINVAL)
        }

        @Test func adviseChecksTheRangeAndDropsPages() throws {
            let page = MemoryMapping.pageSize
            let mapping = try MemoryMapping(anonymous: 2 * page)
            let error = #expect(throws: SystemError.self) {
                try mapping.advise(offset: page, length: 2 * page, advice: MADV_DONTNEED)
            }
            #expect(error?.errno == EINVAL)
            #expect(error?.call.contains("outside the mapping") == true)
            #expect(throws: SystemError.self) { try mapping.advise(offset: -1, length: 1, advice: MADV_DONTNEED) }

            mapping.bytes[page] = 9
            try mapping.advise(offset: page, length: page, advice: MADV_DONTNEED)
            #expect(mapping.bytes[page] == 0)
        }
    }
}

/// The whole content of a (small, procfs) file as text.
func readWholeFile(_ path: String) throws -> String {
    let file = try OwnedFileDescriptor(path: path, flags: O_RDONLY)
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = try chunk.withUnsafeMutableBytes { (bytes) throws(SystemError) in try file.read(into: bytes) }
        if count == 0 { break }
        result += chunk[0..<count]
    }
    return String(decoding: result, as: UTF8.self)
}

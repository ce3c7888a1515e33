/// Tiny bootable "kernels" for testing a VMM's boot path on hosts that cannot run Linux:
/// an ELF64 image with one loadable segment and the PVH entry note (Xen note type 18),
/// which a VMM enters in 32-bit protected mode with paging off, as it would a vmlinux.
public enum TinyKernel {
    /// An ELF64 x86-64 executable whose only segment holds `code` at `loadAddress`, with a
    /// PVH entry note pointing at its first byte.
    public static func pvhELF(code: [UInt8], loadAddress: UInt64 = 0x10_0000) -> [UInt8] {
        var note: [UInt8] = []
        note.appendLE(UInt32(4))                      // name size: "Xen\0"
        note.appendLE(UInt32(4))                      // descriptor size
        note.appendLE(UInt32(18))                     // XEN_ELFNOTE_PHYS32_ENTRY
        note += Array("Xen".utf8) + [0]
        note.appendLE(UInt32(truncatingIfNeeded: loadAddress))

        let headerSize = 64, programHeaderSize = 56, count = 2
        let noteOffset = headerSize + count * programHeaderSize
        let codeOffset = (noteOffset + note.count + 15) & ~15

        var image: [UInt8] = [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1] + Array(repeating: 0, count: 9)
        image.appendLE(UInt16(2))                     // ET_EXEC
        image.appendLE(UInt16(62))                    // EM_X86_64
        image.appendLE(UInt32(1))                     // EV_CURRENT
        image.appendLE(loadAddress)                   // e_entry
        image.appendLE(UInt64(headerSize))            // e_phoff
        image.appendLE(UInt64(0))                     // e_shoff
        image.appendLE(UInt32(0))                     // e_flags
        image.appendLE(UInt16(headerSize))
        image.appendLE(UInt16(programHeaderSize))
        image.appendLE(UInt16(count))
        image += [0, 0, 0, 0, 0, 0]                   // section headers: none

        // PT_LOAD for the code, then PT_NOTE for the PVH entry.
        for (type, offset, address, size) in [(UInt32(1), codeOffset, loadAddress, code.count),
                                              (UInt32(4), noteOffset, UInt64(0), note.count)] {
            image.appendLE(type)
            image.appendLE(UInt32(5))                 // R+X
            image.appendLE(UInt64(offset))
            image.appendLE(address)
            image.appendLE(address)
            image.appendLE(UInt64(size))
            image.appendLE(UInt64(size))
            image.appendLE(UInt64(type == 1 ? 0x1000 : 4))
        }
        image += note
        image += Array(repeating: 0, count: codeOffset - image.count)
        return image + code
    }
}

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}

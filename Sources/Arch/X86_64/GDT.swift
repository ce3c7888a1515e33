import GuestMemory
import Hypervisor

/// Boot-time global descriptor tables: building 8-byte segment descriptors, turning them
/// into the `SegmentRegister` values a vCPU is loaded with, and writing a table (and the
/// null IDT) to guest memory.
///
/// A descriptor packs, from bit 0: limit 15..0, base 23..0, the access byte (type,
/// S, DPL, P), limit 19..16, the flags nibble (AVL, L, D/B, G), base 31..24.
public enum GDT {
    /// The boot GDT for a 64-bit Linux boot-protocol entry (Cloud Hypervisor's long-mode
    /// table): null, 64-bit code `0x00AF9B000000FFFF`, data `0x00CF93000000FFFF`, and a
    /// busy TSS `0x008F8B000000FFFF`.
    public static let longMode: [UInt64] = [
        0,
        entry(flags: 0xA09B, base: 0, limit: 0xFFFFF),
        entry(flags: 0xC093, base: 0, limit: 0xFFFFF),
        entry(flags: 0x808B, base: 0, limit: 0xFFFFF),
    ]

    /// The boot GDT for a PVH entry (Cloud Hypervisor's 32-bit table, as the PVH ABI asks:
    /// flat 4 GiB 32-bit segments): null, code `0x00CF9B000000FFFF`, data
    /// `0x00CF93000000FFFF`, and a 0x68-byte busy TSS `0x00008B0000000067`.
    public static let protectedMode: [UInt64] = [
        0,
        entry(flags: 0xC09B, base: 0, limit: 0xFFFF_FFFF),
        entry(flags: 0xC093, base: 0, limit: 0xFFFF_FFFF),
        entry(flags: 0x008B, base: 0, limit: 0x67),
    ]

    /// The index of the code segment in both boot tables (selector 0x08).
    public static let codeIndex: UInt8 = 1
    /// The index of the data segment in both boot tables (selector 0x10).
    public static let dataIndex: UInt8 = 2
    /// The index of the TSS in both boot tables (selector 0x18).
    public static let tssIndex: UInt8 = 3

    /// A descriptor from `flags` (access byte in bits 7..0, flags nibble in bits 15..12),
    /// a base and a 20-bit limit (higher limit bits are dropped; set G to count 4 KiB units).
    public static func entry(flags: UInt16, base: UInt32, limit: UInt32) -> UInt64 {
        let base = UInt64(base)
        let limit = UInt64(limit)
        return ((base & 0xFF00_0000) << 32)
            | ((UInt64(flags) & 0xF0FF) << 40)
            | ((limit & 0x000F_0000) << 32)
            | ((base & 0x00FF_FFFF) << 16)
            | (limit & 0xFFFF)
    }

    /// The segment register a vCPU gets for descriptor `entry` at `index` in its table.
    ///
    /// The limit is in bytes, scaled when G is set (`(limit << 12) | 0xFFF`), as KVM's
    /// segment state expects; a descriptor without P is marked unusable.
    public static func segment(from entry: UInt64, index: UInt8) -> SegmentRegister {
        let rawLimit = UInt32(truncatingIfNeeded: ((entry >> 32) & 0x000F_0000) | (entry & 0xFFFF))
        let granular = (entry >> 55) & 1 == 1
        let present = (entry >> 47) & 1 == 1
        return SegmentRegister(
            base: ((entry >> 32) & 0xFF00_0000) | ((entry >> 16) & 0x00FF_FFFF),
            limit: granular ? (rawLimit << 12) | 0xFFF : rawLimit,
            selector: UInt16(index) * 8,
            type: UInt8(truncatingIfNeeded: (entry >> 40) & 0xF),
            present: present,
            dpl: UInt8(truncatingIfNeeded: (entry >> 45) & 0x3),
            db: (entry >> 54) & 1 == 1,
            s: (entry >> 44) & 1 == 1,
            l: (entry >> 53) & 1 == 1,
            g: granular,
            avl: (entry >> 52) & 1 == 1,
            unusable: !present)
    }

    /// Writes `table` at `X86Layout.bootGDTStart` and a single null IDT entry at
    /// `X86Layout.bootIDTStart`, and returns the GDTR and IDTR that describe them.
    ///
    /// - Throws: `.guestMemory` when RAM does not back either table.
    public static func write(_ table: [UInt64], to memory: GuestMemory,
                             gdtAddress: GuestAddress = X86Layout.bootGDTStart,
                             idtAddress: GuestAddress = X86Layout.bootIDTStart)
        throws(ArchError) -> (gdt: DescriptorTable, idt: DescriptorTable) {
        precondition(!table.isEmpty && table.count <= 8192, "a GDT holds 1 to 8192 descriptors")
        var buffer = LittleEndianBuffer(size: table.count * 8)
        for (index, descriptor) in table.enumerated() { buffer.put(descriptor, at: index * 8) }
        do {
            try memory.write(bytes: buffer.bytes, at: gdtAddress)
        } catch {
            throw .guestMemory(while: "writing the boot GDT at \(gdtAddress)", error)
        }
        do {
            try memory.write(UInt64(0), at: idtAddress)
        } catch {
            throw .guestMemory(while: "writing the boot IDT at \(idtAddress)", error)
        }
        return (DescriptorTable(base: gdtAddress.rawValue, limit: UInt16(table.count * 8 - 1)),
                DescriptorTable(base: idtAddress.rawValue, limit: 7))
    }
}

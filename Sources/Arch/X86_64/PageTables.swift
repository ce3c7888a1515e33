import GuestMemory

/// The identity page tables for a 64-bit entry: one PML4 entry → one page-directory-pointer
/// entry → a page directory of 512 2 MiB pages, mapping virtual `[0, 1 GiB)` onto the same
/// physical addresses, as Cloud Hypervisor built them for its long-mode entry. Enough for
/// the kernel's `startup_64`, which builds its own tables at once.
public enum IdentityPageTables {
    /// Entry bits: present (1) and writable (2).
    public static let presentWritable: UInt64 = 0x3
    /// Entry bit 7: the page-directory entry maps a 2 MiB page.
    public static let pageSize: UInt64 = 0x80
    /// How much the tables map (1 GiB).
    public static let mappedSize: UInt64 = 1 << 30

    /// The three 4 KiB pages: PML4 (entry 0 → the PDPT), PDPT (entry 0 → the page
    /// directory), and the page directory (entry i maps `i * 2 MiB`, present, writable, large).
    public static func pages(pdpt: GuestAddress = X86Layout.pdpteStart,
                             pageDirectory: GuestAddress = X86Layout.pdeStart) -> (pml4: [UInt8], pdpt: [UInt8], pageDirectory: [UInt8]) {
        var pml4Page = LittleEndianBuffer(size: 4096)
        pml4Page.put(pdpt.rawValue | presentWritable, at: 0)
        var pdptPage = LittleEndianBuffer(size: 4096)
        pdptPage.put(pageDirectory.rawValue | presentWritable, at: 0)
        var directory = LittleEndianBuffer(size: 4096)
        for index in 0..<512 {
            directory.put((UInt64(index) << 21) | pageSize | presentWritable, at: index * 8)
        }
        return (pml4Page.bytes, pdptPage.bytes, directory.bytes)
    }

    /// Writes the three pages and returns the CR3 value (the PML4's address).
    ///
    /// - Throws: `.guestMemory` when RAM does not back a page.
    public static func write(to memory: GuestMemory, pml4: GuestAddress = X86Layout.pml4Start,
                             pdpt: GuestAddress = X86Layout.pdpteStart,
                             pageDirectory: GuestAddress = X86Layout.pdeStart) throws(ArchError) -> UInt64 {
        let tables = pages(pdpt: pdpt, pageDirectory: pageDirectory)
        for (name, address, bytes) in [("PML4", pml4, tables.pml4), ("PDPT", pdpt, tables.pdpt),
                                        ("page directory", pageDirectory, tables.pageDirectory)] {
            do {
                try memory.write(bytes: bytes, at: address)
            } catch {
                throw .guestMemory(while: "writing the boot \(name) at \(address)", error)
            }
        }
        return pml4.rawValue
    }
}

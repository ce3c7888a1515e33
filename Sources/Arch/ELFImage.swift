/// A validated 64-bit little-endian ELF executable: its header fields, its loadable
/// segments and its notes, parsed from the file bytes without touching guest memory.
///
/// Parsing checks everything a loader relies on before any byte is copied: the magic,
/// class, data encoding, version, type and machine; that the program-header table lies
/// inside the file and has entries of the ELF64 size; that every `PT_LOAD` segment's file
/// bytes lie inside the file, that its file size does not exceed its memory size, and that
/// neither range overflows 64 bits; and that every note in `PT_NOTE` segments is well formed.
public struct ELFImage: Sendable {
    /// `EM_X86_64`, the machine number of x86-64 executables.
    public static let machineX86_64: UInt16 = 62
    /// `EM_AARCH64`, the machine number of 64-bit Arm executables.
    public static let machineAArch64: UInt16 = 183
    /// The size of the ELF64 file header.
    public static let headerSize = 64
    /// The size of one ELF64 program header.
    public static let programHeaderSize = 56
    /// `PT_LOAD`: a segment copied into memory.
    public static let segmentTypeLoad: UInt32 = 1
    /// `PT_NOTE`: a segment holding notes.
    public static let segmentTypeNote: UInt32 = 4

    /// One loadable (`PT_LOAD`) segment.
    public struct Segment: Hashable, Sendable {
        /// The index of its program header.
        public var index: Int
        /// Where its bytes start in the file.
        public var fileOffset: UInt64
        /// How many bytes come from the file.
        public var fileSize: UInt64
        /// The physical address it loads at (`p_paddr`).
        public var physicalAddress: UInt64
        /// The virtual address it is linked at (`p_vaddr`).
        public var virtualAddress: UInt64
        /// Its size in memory; the bytes past `fileSize` are zero (BSS).
        public var memorySize: UInt64
        /// Its `p_flags` (1 execute, 2 write, 4 read).
        public var flags: UInt32
    }

    /// One note from a `PT_NOTE` segment.
    public struct Note: Hashable, Sendable {
        /// The note's owner name without its NUL terminator (for example `Xen`).
        public var name: [UInt8]
        /// The note's type, meaningful per owner.
        public var type: UInt32
        /// The note's descriptor bytes.
        public var descriptor: [UInt8]
        /// The index of the program header it came from.
        public var segmentIndex: Int
    }

    /// The file type (`ET_EXEC` 2 or `ET_DYN` 3).
    public let fileType: UInt16
    /// The machine (`EM_X86_64`...).
    public let machine: UInt16
    /// The entry point (`e_entry`). For a Linux `vmlinux` it is a physical address.
    public let entry: UInt64
    /// The loadable segments, in program-header order.
    public let loadSegments: [Segment]
    /// The notes of every `PT_NOTE` segment, in file order.
    public let notes: [Note]

    /// Parses and validates `bytes` as an ELF64 little-endian executable for `machine`.
    ///
    /// - Throws: an `ArchError.elf...` case naming the first problem found.
    public init(parsing bytes: [UInt8], machine expectedMachine: UInt16) throws(ArchError) {
        guard bytes.count >= Self.headerSize else {
            throw .elfTruncated(what: "the ELF header", end: UInt64(Self.headerSize), fileSize: bytes.count)
        }
        guard bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46 else {
            throw .elfBadMagic(Array(bytes[0..<4]))
        }
        guard bytes[4] == 2 else { throw .elfNot64Bit(elfClass: bytes[4]) }
        guard bytes[5] == 1 else { throw .elfNotLittleEndian(dataEncoding: bytes[5]) }
        guard bytes[6] == 1 else { throw .elfBadVersion(UInt32(bytes[6])) }
        let fileType = bytes.loadLittleEndian(UInt16.self, at: 16)!
        let machine = bytes.loadLittleEndian(UInt16.self, at: 18)!
        let version = bytes.loadLittleEndian(UInt32.self, at: 20)!
        let entry = bytes.loadLittleEndian(UInt64.self, at: 24)!
        let phoff = bytes.loadLittleEndian(UInt64.self, at: 32)!
        let phentsize = bytes.loadLittleEndian(UInt16.self, at: 54)!
        let phnum = bytes.loadLittleEndian(UInt16.self, at: 56)!
        guard fileType == 2 || fileType == 3 else { throw .elfNotExecutable(fileType: fileType) }
        guard machine == expectedMachine else { throw .elfWrongMachine(found: machine, expected: expectedMachine) }
        guard version == 1 else { throw .elfBadVersion(version) }
        guard Int(phentsize) == Self.programHeaderSize else { throw .elfBadProgramHeaderSize(phentsize) }
        guard phnum > 0 else { throw .elfNoLoadableSegments }
        guard phoff >= UInt64(Self.headerSize) else { throw .elfBadProgramHeaderOffset(phoff) }
        // The table's end: phnum <= 0xFFFF entries of 56 bytes cannot overflow once phoff is
        // known to be below the file size.
        let tableSize = UInt64(phnum) * UInt64(Self.programHeaderSize)
        guard phoff <= UInt64(bytes.count), tableSize <= UInt64(bytes.count) - phoff else {
            // Name the first program header that runs past the end of the file.
            let first = phoff <= UInt64(bytes.count) ? (UInt64(bytes.count) - phoff) / UInt64(Self.programHeaderSize) : 0
            let end = UInt128(phoff) + UInt128(first + 1) * UInt128(Self.programHeaderSize)
            throw .elfTruncated(what: "program header \(first)", end: UInt64(clamping: end), fileSize: bytes.count)
        }

        var loads: [Segment] = []
        var notes: [Note] = []
        for index in 0..<Int(phnum) {
            let base = Int(phoff) + index * Self.programHeaderSize
            let type = bytes.loadLittleEndian(UInt32.self, at: base)!
            guard type == Self.segmentTypeLoad || type == Self.segmentTypeNote else { continue }
            let flags = bytes.loadLittleEndian(UInt32.self, at: base + 4)!
            let offset = bytes.loadLittleEndian(UInt64.self, at: base + 8)!
            let vaddr = bytes.loadLittleEndian(UInt64.self, at: base + 16)!
            let paddr = bytes.loadLittleEndian(UInt64.self, at: base + 24)!
            let filesz = bytes.loadLittleEndian(UInt64.self, at: base + 32)!
            let memsz = bytes.loadLittleEndian(UInt64.self, at: base + 40)!
            let align = bytes.loadLittleEndian(UInt64.self, at: base + 48)!

            let (fileEnd, fileOverflow) = offset.addingReportingOverflow(filesz)
            guard !fileOverflow else { throw .elfSegmentOverflow(index: index, what: "file range", start: offset, size: filesz) }
            guard fileEnd <= UInt64(bytes.count) else {
                throw .elfSegmentOutsideFile(index: index, offset: offset, size: filesz, fileSize: bytes.count)
            }
            if type == Self.segmentTypeNote {
                notes += try Self.parseNotes(bytes[Int(offset)..<Int(fileEnd)], alignment: align == 8 ? 8 : 4, segment: index)
                continue
            }
            guard filesz <= memsz else { throw .elfSegmentFileSizeExceedsMemorySize(index: index, fileSize: filesz, memorySize: memsz) }
            guard !paddr.addingReportingOverflow(memsz).overflow else {
                throw .elfSegmentOverflow(index: index, what: "physical range", start: paddr, size: memsz)
            }
            loads.append(Segment(index: index, fileOffset: offset, fileSize: filesz, physicalAddress: paddr,
                                 virtualAddress: vaddr, memorySize: memsz, flags: flags))
        }
        guard !loads.isEmpty else { throw .elfNoLoadableSegments }
        self.fileType = fileType
        self.machine = machine
        self.entry = entry
        self.loadSegments = loads
        self.notes = notes
    }

    /// Splits a note segment's bytes into notes: each a 12-byte header (`namesz`, `descsz`,
    /// `type`), then the name and the descriptor, each padded to `alignment`.
    static func parseNotes(_ bytes: ArraySlice<UInt8>, alignment: Int, segment: Int) throws(ArchError) -> [Note] {
        let data = Array(bytes)
        var notes: [Note] = []
        var position = 0
        while position < data.count {
            guard let nameSize = data.loadLittleEndian(UInt32.self, at: position),
                  let descriptorSize = data.loadLittleEndian(UInt32.self, at: position + 4),
                  let type = data.loadLittleEndian(UInt32.self, at: position + 8) else {
                throw .elfMalformedNote(segment: segment, offset: position, reason: "its 12-byte header runs past the segment's end")
            }
            let nameStart = position + 12
            let descriptorStart = nameStart + Self.padded(Int(nameSize), to: alignment)
            let noteEnd = descriptorStart + Self.padded(Int(descriptorSize), to: alignment)
            // Sizes are at most 2^32 each, so these sums fit in Int on a 64-bit host.
            guard descriptorStart + Int(descriptorSize) <= data.count else {
                throw .elfMalformedNote(segment: segment, offset: position,
                                        reason: "its name (\(nameSize) bytes) and descriptor (\(descriptorSize) bytes) run past the segment's \(data.count) bytes")
            }
            var name = Array(data[nameStart..<(nameStart + Int(nameSize))])
            if name.last == 0 { name.removeLast() }
            let descriptor = Array(data[descriptorStart..<(descriptorStart + Int(descriptorSize))])
            notes.append(Note(name: name, type: type, descriptor: descriptor, segmentIndex: segment))
            position = min(noteEnd, data.count)
        }
        return notes
    }

    /// `size` rounded up to a multiple of `alignment` (a power of two).
    static func padded(_ size: Int, to alignment: Int) -> Int { (size + alignment - 1) & ~(alignment - 1) }

    /// The Xen note type `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical PVH entry point.
    public static let xenNotePhys32Entry: UInt32 = 18

    /// The PVH entry point from the Xen `XEN_ELFNOTE_PHYS32_ENTRY` note, or `nil` when the
    /// image has none. The descriptor may be 4 or 8 bytes (Linux writes a pointer-sized value
    /// on x86-64); the address must fit in 32 bits.
    ///
    /// - Throws: `ArchError.pvhEntryInvalid` for a descriptor of another size or an address
    ///   at or above 4 GiB.
    public func pvhEntry() throws(ArchError) -> UInt64? {
        guard let note = notes.first(where: { $0.name == Array("Xen".utf8) && $0.type == Self.xenNotePhys32Entry }) else {
            return nil
        }
        let value: UInt64
        switch note.descriptor.count {
        case 4: value = UInt64(note.descriptor.loadLittleEndian(UInt32.self, at: 0)!)
        case 8: value = note.descriptor.loadLittleEndian(UInt64.self, at: 0)!
        default: throw .pvhEntryInvalid(reason: "its descriptor is \(note.descriptor.count) bytes, not 4 or 8")
        }
        guard value <= UInt64(UInt32.max) else {
            throw .pvhEntryInvalid(reason: "its address \(hex(value)) is not below 4 GiB, but the PVH entry runs in 32-bit mode")
        }
        return value
    }
}

import GuestMemory

/// A kernel command line, checked against the size the kernel accepts and written to guest
/// memory as a NUL-terminated string.
///
/// The text may not contain a NUL byte (the guest would see it as the end), and the text
/// plus its terminating NUL must fit in `maxSize` bytes.
public struct KernelCmdline: Hashable, Sendable, CustomStringConvertible {
    /// The x86 kernel's default `COMMAND_LINE_SIZE` (2048 bytes, NUL included). A bzImage
    /// says its own limit in the setup header's `cmdline_size` (protocol 2.06 and later).
    public static let defaultMaxSize = 2048

    /// The command line, without the terminating NUL.
    public private(set) var text: String
    /// The most bytes the command line may take in guest memory, NUL included.
    public let maxSize: Int

    /// Checks and keeps `text`.
    ///
    /// - Throws: `ArchError.invalidCommandLineMaxSize` for a `maxSize` below 1,
    ///   `.commandLineContainsNUL` or `.commandLineTooLong`.
    public init(_ text: String = "", maxSize: Int = KernelCmdline.defaultMaxSize) throws(ArchError) {
        guard maxSize >= 1 else { throw .invalidCommandLineMaxSize(maxSize) }
        self.maxSize = maxSize
        self.text = ""
        try Self.check(text, maxSize: maxSize)
        self.text = text
    }

    /// Appends `part`, separated from what is there by one space.
    ///
    /// - Throws: `.commandLineContainsNUL` or `.commandLineTooLong`; the command line is
    ///   unchanged then.
    public mutating func append(_ part: String) throws(ArchError) {
        guard !part.isEmpty else { return }
        let joined = text.isEmpty ? part : text + " " + part
        try Self.check(joined, maxSize: maxSize)
        text = joined
    }

    /// The bytes written to guest memory: the UTF-8 text and a terminating NUL.
    public var bytes: [UInt8] { Array(text.utf8) + [0] }

    /// The size in guest memory, NUL included (what `boot_params.hdr.cmdline_size` gets).
    public var sizeWithTerminator: Int { text.utf8.count + 1 }

    /// Writes the NUL-terminated command line at `address` (by default `X86Layout.cmdlineStart`).
    ///
    /// - Throws: `ArchError.guestMemory` when the bytes do not fit in guest RAM there.
    public func write(to memory: GuestMemory, at address: GuestAddress = X86Layout.cmdlineStart) throws(ArchError) {
        do {
            try memory.write(bytes: bytes, at: address)
        } catch {
            throw .guestMemory(while: "writing the kernel command line", error)
        }
    }

    /// The command line itself.
    public var description: String { text }

    /// Refuses NUL bytes and text that does not fit with its NUL in `maxSize` bytes.
    static func check(_ text: String, maxSize: Int) throws(ArchError) {
        let utf8 = Array(text.utf8)
        if let position = utf8.firstIndex(of: 0) { throw .commandLineContainsNUL(position: position) }
        guard utf8.count + 1 <= maxSize else { throw .commandLineTooLong(size: utf8.count + 1, maxSize: maxSize) }
    }
}

/// The 4 KiB blocks a crash-test writer writes, recognisable after a crash: word 0 holds the
/// operation's serial number, word 1 the block number, the rest a hash of both, so a reader
/// can tell which operation a block came from and that it arrived whole.
public enum CrashPattern {
    /// The block size the pattern is made of.
    public static let blockSize = 4096

    /// The contents of block `block` as written by operation `serial`.
    public static func block(serial: UInt64, block: UInt64) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: blockSize)
        var random = SplitMix64(seed: serial &* 0x9E37_79B9 ^ block)
        for word in 0..<(blockSize / 8) {
            let value = word == 0 ? serial : word == 1 ? block : random.next()
            for byte in 0..<8 { bytes[word * 8 + byte] = UInt8(truncatingIfNeeded: value >> (8 * byte)) }
        }
        return bytes
    }

    /// Which operation wrote `bytes` (block `block`): 0 for an all-zero block, nil when the
    /// bytes match no operation (torn or foreign data).
    public static func serial(of bytes: ArraySlice<UInt8>, block: UInt64) -> UInt64? {
        if bytes.allSatisfy({ $0 == 0 }) { return 0 }
        guard bytes.count == blockSize else { return nil }
        let serial = bytes.prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return Array(bytes) == Self.block(serial: serial, block: block) ? serial : nil
    }
}

import BlockStorage
import CZlib

/// A reusable zlib inflate stream for compressed qcow2 clusters: raw deflate data (no zlib
/// header) with a 4 KiB window (`windowBits` -12), as QEMU writes them.
final class Inflater {
    private let stream: UnsafeMutablePointer<z_stream>

    init() throws(BlockError) {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let result = inflateInit2_(stream, -12, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard result == Z_OK else {
            stream.deallocate()
            throw .other("zlib inflateInit2 failed with code \(result)")
        }
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
    }

    /// Inflates `input` into all of `output`; true when the stream filled it exactly (trailing
    /// input bytes, the rest of the last sector, are ignored as the spec allows).
    func inflate(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Bool {
        guard inflateReset(stream) == Z_OK, let inBase = input.baseAddress, let outBase = output.baseAddress else { return false }
        // SAFETY: zlib only reads `avail_in` bytes from `next_in` (it never writes through it,
        // though the C field is not const) and writes at most `avail_out` bytes to `next_out`.
        stream.pointee.next_in = UnsafeMutablePointer(mutating: inBase.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(input.count)
        stream.pointee.next_out = outBase.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = uInt(output.count)
        let result = CZlib.inflate(stream, Z_FINISH)
        let filled = stream.pointee.avail_out == 0
        stream.pointee.next_in = nil
        stream.pointee.next_out = nil
        return filled && (result == Z_STREAM_END || result == Z_BUF_ERROR || result == Z_OK)
    }
}

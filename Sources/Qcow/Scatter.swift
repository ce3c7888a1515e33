/// A caller's buffer list seen as one byte range, so that a request can be cut at cluster
/// boundaries into sub-lists without copying.
struct Scatter {
    /// The buffers, in order (empty ones left out).
    let buffers: [UnsafeMutableRawBufferPointer]
    /// The byte where each buffer starts within the whole range.
    private let starts: [Int]
    /// The total length.
    let count: Int

    init(_ buffers: [UnsafeMutableRawBufferPointer]) {
        let kept = buffers.filter { $0.count > 0 }
        var starts: [Int] = []
        starts.reserveCapacity(kept.count)
        var total = 0
        for buffer in kept {
            starts.append(total)
            total += buffer.count
        }
        self.buffers = kept
        self.starts = starts
        count = total
    }

    /// The buffers covering `[position, position + length)` of the whole range.
    func slices(from position: Int, count length: Int) -> [UnsafeMutableRawBufferPointer] {
        if length == 0 { return [] }
        if buffers.count == 1 {
            return [UnsafeMutableRawBufferPointer(rebasing: buffers[0][position..<(position + length)])]
        }
        var index = firstBuffer(containing: position)
        var result: [UnsafeMutableRawBufferPointer] = []
        var position = position
        var remaining = length
        while remaining > 0 {
            let buffer = buffers[index]
            let inside = position - starts[index]
            let take = min(buffer.count - inside, remaining)
            result.append(UnsafeMutableRawBufferPointer(rebasing: buffer[inside..<(inside + take)]))
            remaining -= take
            position += take
            index += 1
        }
        return result
    }

    /// Zero-fills `[position, position + length)`.
    func zero(from position: Int, count length: Int) {
        for slice in slices(from: position, count: length) { slice.initializeMemory(as: UInt8.self, repeating: 0) }
    }

    /// Copies `source` into the range starting at `position`.
    func copy(from source: UnsafeRawBufferPointer, to position: Int) {
        var done = 0
        for slice in slices(from: position, count: source.count) {
            slice.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[done..<(done + slice.count)]))
            done += slice.count
        }
    }

    /// Copies the range starting at `position` into `destination` (its whole length).
    func copy(to destination: UnsafeMutableRawBufferPointer, from position: Int) {
        var done = 0
        for slice in slices(from: position, count: destination.count) {
            UnsafeMutableRawBufferPointer(rebasing: destination[done..<(done + slice.count)]).copyMemory(from: UnsafeRawBufferPointer(slice))
            done += slice.count
        }
    }

    private func firstBuffer(containing position: Int) -> Int {
        var low = 0, high = starts.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if starts[middle] <= position { low = middle } else { high = middle - 1 }
        }
        return low
    }
}

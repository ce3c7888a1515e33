// qcow-bench: I/O through the Qcow module, timed; Scripts/bench-qcow.sh runs it beside qemu-img/qemu-io.
//
//   qcow-bench seq IMAGE [--chunk BYTES]           read the whole disk in order (default 2 MiB requests)
//   qcow-bench rand IMAGE OFFSETS [--write]        one 4 KiB read (or write) per offset in the file, then flush
//   qcow-bench offsets COUNT SIZE [SEED]           print COUNT random 4 KiB-aligned offsets below SIZE
//
// Each timing line is "<what> <bytes or ops> <seconds>".
import BenchmarkSupport
import BlockStorage
import Glibc
import Qcow
import TestSupport

func fail(_ message: String) -> Never { fail(tool: "qcow-bench", message) }

func openImage(_ path: String, writable: Bool) -> any BlockBackend {
    do {
        return try DiskImage.open(path: path, options: .init(readOnly: !writable, backingFiles: true))
    } catch { fail("cannot open \(path): \(error)") }
}

/// A page-aligned buffer (so the numbers match what a device doing DMA-style I/O sees).
func alignedBuffer(_ count: Int) -> UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 4096), count: count)
}

func sequential(_ path: String, chunk: Int) {
    let disk = openImage(path, writable: false)
    let buffer = alignedBuffer(chunk)
    var checksum: UInt8 = 0
    let start = now()
    var offset: UInt64 = 0
    while offset < disk.size {
        let count = Int(min(UInt64(chunk), disk.size - offset))
        do { try disk.read(into: [UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])], at: offset) } catch { fail("read at \(offset): \(error)") }
        checksum ^= buffer[count - 1]
        offset += UInt64(count)
    }
    let seconds = now() - start
    print("seq-read \(disk.size) \(seconds) checksum=\(checksum)")
}

func random(_ path: String, offsetsFile: String, writing: Bool) {
    guard let file = fopen(offsetsFile, "r") else { fail("cannot open \(offsetsFile)") }
    var offsets: [UInt64] = []
    var line: UnsafeMutablePointer<CChar>?
    var capacity = 0
    while getline(&line, &capacity, file) > 0 {
        if let value = UInt64(String(cString: line!).trimmingPrefix(" ").filter { $0.isNumber }) { offsets.append(value) }
    }
    free(line)
    fclose(file)
    let disk = openImage(path, writable: writing)
    let buffer = alignedBuffer(4096)
    buffer.initializeMemory(as: UInt8.self, repeating: 0xAB)
    let start = now()
    for offset in offsets {
        do {
            if writing {
                try disk.write(from: [UnsafeRawBufferPointer(buffer)], at: offset)
            } else {
                try disk.read(into: [buffer], at: offset)
            }
        } catch { fail("\(writing ? "write" : "read") at \(offset): \(error)") }
    }
    do { try disk.flush() } catch { fail("flush: \(error)") }
    let seconds = now() - start
    print("rand-\(writing ? "write" : "read") \(offsets.count) \(seconds)")
}

let arguments = CommandLine.arguments
switch arguments.count > 1 ? arguments[1] : "" {
case "seq" where arguments.count >= 3:
    let chunk = arguments.count >= 5 && arguments[3] == "--chunk" ? Int(arguments[4]) ?? 0 : 2 << 20
    guard chunk > 0 else { fail("--chunk needs a positive byte count") }
    sequential(arguments[2], chunk: chunk)
case "rand" where arguments.count >= 4:
    random(arguments[2], offsetsFile: arguments[3], writing: arguments.count >= 5 && arguments[4] == "--write")
case "offsets" where arguments.count >= 4:
    guard let count = Int(arguments[2]), let size = UInt64(arguments[3]), size >= 4096 else { fail("offsets COUNT SIZE [SEED]") }
    var generator = SplitMix64(seed: arguments.count >= 5 ? UInt64(arguments[4]) ?? 1 : 1)
    var text = ""
    for _ in 0..<count { text += "\(generator.next() % (size / 4096) * 4096)\n" }
    print(text, terminator: "")
default:
    fail("usage: qcow-bench seq IMAGE [--chunk BYTES] | rand IMAGE OFFSETS [--write] | offsets COUNT SIZE [SEED]")
}

// fuzz-arm64-image: the input is an arm64 Linux `Image` after one byte choosing the load base.
// ARM64ImageLoader must refuse every malformed header with an AArch64Error; a header it
// accepts must satisfy the boot protocol's rules, and a load that succeeds must have put the
// file's bytes at base + text_offset, inside RAM.
import Arch
import FuzzSupport
import GuestMemory

@main
enum ARM64ImageFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

/// 8 MiB of RAM at the arm64 RAM base: the kernel base (RAM + 4 MiB) has room for 4 MiB.
let memory: GuestMemory = {
    do {
        return try GuestMemory.anonymous([(AArch64Layout.ramStart, 8 << 20)], options: [.noReserve])
    } catch {
        fatalError("cannot map the arm64 guest memory: \(error)")
    }
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        // 0: the default base; 1: 2 MiB above it; 2: a misaligned base; 3: a base outside RAM.
        let choice = input.byte() % 4
        let image = input.rest()
        let base: GuestAddress = switch choice {
        case 0: AArch64Layout.kernelStart
        case 1: GuestAddress(AArch64Layout.kernelStart.rawValue + (2 << 20))
        case 2: GuestAddress(AArch64Layout.kernelStart.rawValue + 0x1000)
        default: GuestAddress(0x1_0000_0000)
        }
        guard let header = try? ARM64ImageLoader.parse(image) else { return }
        fuzzCheck(image.count >= ARM64ImageHeader.size, "a \(image.count)-byte file was accepted")
        fuzzCheck(!header.isBigEndian, "a big-endian kernel was accepted")
        fuzzCheck(header.textOffset < ARM64ImageHeader.baseAlignment && header.textOffset % 4096 == 0,
                  "text_offset \(header.textOffset) accepted")
        fuzzCheck(header.imageSize == 0 || header.imageSize >= UInt64(image.count), "image_size below the file size accepted")
        do {
            let load = try ARM64ImageLoader.load(image, into: memory, base: base)
            fuzzCheck(choice < 2, "a load at a misaligned or unbacked base succeeded")
            fuzzCheck(load.entry.rawValue == base.rawValue + header.textOffset, "entry \(load.entry) is not base + text_offset")
            fuzzCheck(load.loadEnd.rawValue - load.entry.rawValue == max(header.imageSize, UInt64(image.count)),
                      "load end does not cover image_size")
            let stored = try memory.readBytes(count: image.count, at: load.entry)
            fuzzCheck(stored == image, "the Image's bytes are not in guest memory")
        } catch {
            // Refusals are fine: a base that is misaligned or an image_size beyond RAM.
        }
    }
}

/// A valid 4 KiB-page Image, the same with an EFI stub, and a pre-3.17 header (image_size 0).
private func seeds() -> [[UInt8]] {
    func image(textOffset: UInt64, imageSize: UInt64, flags: UInt64, pe: Bool) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 512)
        func put(_ value: UInt64, _ offset: Int, _ count: Int) {
            for index in 0..<count { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
        }
        put(textOffset, 8, 8)
        put(imageSize, 16, 8)
        put(flags, 24, 8)
        put(0x644D_5241, 56, 4)
        if pe {
            bytes[0] = 0x4D
            bytes[1] = 0x5A
            put(0x40, 60, 4)
            put(0x0000_4550, 0x40, 4)
        }
        return bytes
    }
    return [
        [0] + image(textOffset: 0, imageSize: 0x20_0000, flags: 0b1010, pe: false),
        [1] + image(textOffset: 0x8_0000, imageSize: 0x10_0000, flags: 0b0010, pe: true),
        [0] + image(textOffset: 0x1234, imageSize: 0, flags: 0, pe: false),
    ]
}

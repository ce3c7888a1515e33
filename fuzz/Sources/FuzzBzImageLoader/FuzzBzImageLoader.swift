// fuzz-bzimage-loader: the input is a bzImage. BzImageLoader parses its setup header and
// loads the protected-mode kernel into 2 MiB of guest memory, at its own code32_start and
// at 1 MiB. Malformed images must be refused with an ArchError, never trap.
import Arch
import FuzzSupport
import GuestMemory

@main
enum BzImageLoaderFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let image = input.rest()
        guard let parsed = try? BzImageLoader.parse(image) else { return }
        fuzzCheck(parsed.setupSize + parsed.kernelSize == image.count, "setup and kernel sizes do not add up to the file")
        for address in [nil, GuestAddress(0x10_0000)] {
            guard let result = try? BzImageLoader.load(image, into: LoaderMemory.memory, loadAddress: address) else { continue }
            fuzzCheck(result.loadStart <= result.loadEnd, "load range \(result.loadStart)..<\(result.loadEnd) is backwards")
            fuzzCheck(result.setupHeader?.code32Start == UInt32(result.loadStart.rawValue), "code32_start not updated")
        }
    }
}

/// A minimal relocatable 64-bit bzImage (one setup sector, 64 bytes of kernel), and a
/// non-relocatable one with four default setup sectors.
private func seeds() -> [[UInt8]] {
    func image(setupSectors: UInt8, relocatable: Bool, kernel: Int) -> [UInt8] {
        let setupSize = (Int(setupSectors == 0 ? 4 : setupSectors) + 1) * 512
        var bytes = [UInt8](repeating: 0, count: setupSize + kernel)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            for index in 0..<(T.bitWidth / 8) { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
        }
        put(setupSectors, at: 0x1f1)
        put(UInt32((kernel + 15) / 16), at: 0x1f4)  // syssize
        put(SetupHeader.bootFlagMagic, at: 0x1fe)
        put(SetupHeader.headerMagic, at: 0x202)
        put(UInt16(0x020f), at: 0x206)
        put(SetupHeader.loadedHigh, at: 0x211)
        put(UInt32(0x10_0000), at: 0x214)  // code32_start
        put(UInt32(0x20_0000), at: 0x230)  // kernel_alignment
        put(UInt8(relocatable ? 1 : 0), at: 0x234)
        put(SetupHeader.xlfKernel64, at: 0x236)
        put(UInt64(0x10_0000), at: 0x258)  // pref_address
        put(UInt32(0x1000), at: 0x260)  // init_size
        for index in 0..<kernel { bytes[setupSize + index] = UInt8(truncatingIfNeeded: index) }
        return bytes
    }
    return [image(setupSectors: 1, relocatable: true, kernel: 64), image(setupSectors: 0, relocatable: false, kernel: 100)]
}

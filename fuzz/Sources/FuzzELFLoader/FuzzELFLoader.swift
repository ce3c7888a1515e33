// fuzz-elf-loader: the input is an ELF file. ELFImage parses it for both machines, its
// PVH entry note is looked up, and ELFLoader loads it into 2 MiB of guest memory. Every
// malformed file must be refused with an ArchError; a load that succeeds must have put
// the segment's bytes where it said.
import Arch
import FuzzSupport
import GuestMemory
import HypervisorTesting

@main
enum ELFLoaderFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let image = input.rest()
        _ = try? ELFImage(parsing: image, machine: ELFImage.machineAArch64)
        guard let elf = try? ELFImage(parsing: image, machine: ELFImage.machineX86_64) else { return }
        for segment in elf.loadSegments {
            fuzzCheck(segment.fileSize <= segment.memorySize, "segment \(segment.index): file size above memory size")
            fuzzCheck(segment.fileOffset + segment.fileSize <= UInt64(image.count), "segment \(segment.index) past the file's end")
        }
        _ = try? elf.pvhEntry()
        guard let result = try? ELFLoader.load(image, into: LoaderMemory.memory) else { return }
        fuzzCheck(result.loadStart <= result.loadEnd, "load range \(result.loadStart)..<\(result.loadEnd) is backwards")
        if elf.loadSegments.count == 1, let segment = elf.loadSegments.first, segment.fileSize <= 0x1_0000 {
            let loaded = try? LoaderMemory.memory.readBytes(count: Int(segment.fileSize), at: GuestAddress(segment.physicalAddress))
            let start = Int(segment.fileOffset)
            fuzzCheck(loaded.map { $0[...] } == image[start..<(start + Int(segment.fileSize))], "segment bytes not in guest memory")
        }
    }
}

/// TinyKernel's PVH images: a one-byte kernel at 1 MiB, and a larger one across the region boundary.
private func seeds() -> [[UInt8]] {
    [
        TinyKernel.pvhELF(code: [0xf4]),
        TinyKernel.pvhELF(code: (0..<200).map { UInt8(truncatingIfNeeded: $0) }, loadAddress: 0x17_ffc0),
    ]
}

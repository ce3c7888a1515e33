import Arch
import CLinux
import GuestMemory
import HostSystem
import Hypervisor

/// What the boot vCPU needs to enter the loaded kernel.
struct BootPlan {
    /// How it enters.
    var bootProtocol: X86BootProtocol
    /// Where it enters.
    var entry: GuestAddress
}

/// Failures while loading what the guest boots.
enum BootError: Error, CustomStringConvertible {
    case unreadable(what: String, path: String, SystemError)
    case empty(what: String, path: String)
    case unknownKernelFormat(path: String)
    case arch(String, ArchError)
    case other(String)

    var description: String {
        switch self {
        case .unreadable(let what, let path, let error): return "cannot read the \(what) \(path): \(error)"
        case .empty(let what, let path): return "the \(what) \(path) is empty"
        case .unknownKernelFormat(let path):
            return "\(path) is neither an ELF vmlinux nor a bzImage (no ELF magic and no 'HdrS' boot header)"
        case .arch(let what, let error): return "\(what): \(error)"
        case .other(let text): return text
        }
    }
}

/// Loads the kernel, initramfs and command line into guest memory and writes the boot
/// structures for the protocol the kernel uses (PVH for an ELF with a PVH note, else the
/// Linux 64-bit boot protocol), plus the MP table.
enum BootSetup {
    static func readFile(_ path: String, what: String) throws(BootError) -> [UInt8] {
        do {
            let file = try OwnedFileDescriptor(path: path, flags: O_RDONLY)
            let size = Int(try file.size())
            guard size > 0 else { throw BootError.empty(what: what, path: path) }
            // Read straight into the array's storage: a kernel is tens of MiB (Debian's vmlinux is
            // 63 MiB), and zero-filling it first and copying it after cost a pass each.
            var failure: SystemError?
            let bytes = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                count = 0
                while count < size {
                    let n: Int
                    do throws(SystemError) {
                        n = try file.read(into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[count...]),
                                          at: Int64(count))
                    } catch {
                        failure = error
                        return
                    }
                    if n == 0 { break }
                    count += n
                }
            }
            if let failure { throw failure }
            return bytes
        } catch let error as BootError {
            throw error
        } catch let error as SystemError {
            throw .unreadable(what: what, path: path, error)
        } catch {
            throw .unreadable(what: what, path: path, SystemError(call: "read", errno: EIO))
        }
    }

    static func prepare(payload: PayloadConfig, memory: GuestMemory, vcpuCount: Int, topology: CPUTopology,
                        rsdpAddress: GuestAddress?, hotplugRegionStart: UInt64? = nil) throws(BootError) -> BootPlan {
        let kernelPath = payload.kernel ?? ""
        let kernel = try readFile(kernelPath, what: "kernel")
        let isELF = kernel.count >= 4 && kernel[0..<4] == [0x7F, 0x45, 0x4C, 0x46]
        let isBzImage = kernel.count > 0x206 && kernel[0x202..<0x206] == [0x48, 0x64, 0x72, 0x53]

        let load: KernelLoadResult
        let bootProtocol: X86BootProtocol
        let entry: GuestAddress
        do {
            if isELF {
                load = try ELFLoader.load(kernel, into: memory)
                if let pvh = load.pvhEntry {
                    bootProtocol = .pvh
                    entry = pvh
                } else {
                    bootProtocol = .linux64
                    entry = load.entry
                }
            } else if isBzImage {
                load = try BzImageLoader.load(kernel, into: memory)
                bootProtocol = .linux64
                entry = load.entry
            } else {
                throw BootError.unknownKernelFormat(path: kernelPath)
            }
        } catch let error as BootError {
            throw error
        } catch let error as ArchError {
            throw .arch("cannot load the kernel \(kernelPath)", error)
        } catch {
            throw .unknownKernelFormat(path: kernelPath)
        }

        do {
            let cmdline = try KernelCmdline(payload.cmdline ?? "")
            try cmdline.write(to: memory, at: X86Layout.cmdlineStart)

            var initramfs: InitramfsPlacement?
            if let path = payload.initramfs {
                let image = try readFile(path, what: "initramfs")
                let maxAddress = load.setupHeader.map { UInt64($0.initrdAddressMax) }
                initramfs = try InitramfsLoader.load(image, into: memory, maxAddress: maxAddress, lowestAddress: load.loadEnd)
            }

            // A virtio-mem region is left out: the guest learns it from the device.
            let e820 = try X86Layout.e820Entries(ramRegions: memory.regions.filter { $0.start.rawValue != hotplugRegionStart }.map { ($0.start, $0.size) })
            switch bootProtocol {
            case .pvh:
                let modules = initramfs.map { [PVHModule(address: $0.address, size: $0.size)] } ?? []
                try PVHStartInfo(modules: modules, commandLineAddress: X86Layout.cmdlineStart, rsdpAddress: rsdpAddress,
                                 memoryMap: e820).write(to: memory)
            case .linux64:
                let params = BootParams(setupHeader: load.setupHeader ?? .minimal(), commandLineAddress: X86Layout.cmdlineStart,
                                        commandLineSize: cmdline.sizeWithTerminator, initramfs: initramfs, e820: e820,
                                        acpiRSDPAddress: rsdpAddress)
                try params.write(to: memory)
            }
            // The MP table fits the last KiB below the EBDA for up to 40 vCPUs; larger ones go
            // to the BIOS area at 0xF0000, which Linux also searches for the floating pointer.
            let mpTable = try MPTable(cpuCount: vcpuCount, topology: topology)
            if MPTable.size(cpuCount: vcpuCount) <= Int(X86Layout.ebdaStart.rawValue - X86Layout.mpTableStart.rawValue) {
                try mpTable.write(to: memory)
            } else {
                try mpTable.write(to: memory, at: X86Layout.smbiosStart, limit: X86Layout.highRAMStart)
            }
        } catch let error as BootError {
            throw error
        } catch let error as ArchError {
            throw .arch("cannot set up the boot structures", error)
        } catch {
            throw .other("cannot set up the boot structures: \(error)")
        }
        return BootPlan(bootProtocol: bootProtocol, entry: entry)
    }
}

import CLinux
import Glibc
import HostSystem
import Testing

extension HostSystemTests {
    @Suite struct UserFaultFDTests {
        static let page = MemoryMapping.pageSize

        @Test func handshakeReportsFeaturesAndIoctls() throws {
            let uffd = try UserFaultFD()
            // UFFDIO_REGISTER, UFFDIO_UNREGISTER and UFFDIO_API are always offered.
            #expect(uffd.ioctls & (1 << 0x3F) != 0)
            #expect(uffd.ioctls & (1 << 0x00) != 0)
            let offered = try UserFaultFD.probeFeatures()
            #expect(offered.contains(.missingShmem), "offered: \(offered)")
            let shmem = try UserFaultFD(features: [.missingShmem])
            #expect(shmem.features == [.missingShmem])
            // The descriptor is close-on-exec and non-blocking.
            #expect(clinux_fcntl_val(uffd.rawValue, F_GETFD, 0) & FD_CLOEXEC != 0)
            #expect(clinux_fcntl_val(uffd.rawValue, F_GETFL, 0) & O_NONBLOCK != 0)
        }

        @Test func servesFaultsOfAnotherThreadWithCopyAndZeroPage() throws {
            let memory = try MemoryMapping(anonymous: 4 * Self.page)
            let uffd = try UserFaultFD()
            let allowed = try uffd.registerMissing(memory.baseAddress, length: memory.size)
            #expect(allowed.contains([.copy, .zeroPage]))
            #expect(try uffd.readFaults().isEmpty)

            let base = UInt(bitPattern: memory.baseAddress)
            let seen = Shared<[UInt64]>([])
            let reader = try HostThread(name: "uffd-test") {
                // SAFETY (test): pages 1 and 3 of the live mapping; each read waits for the handler.
                let first = memory.baseAddress.load(fromByteOffset: Self.page + 16, as: UInt64.self)
                let second = memory.baseAddress.load(fromByteOffset: 3 * Self.page, as: UInt64.self)
                seen.update { $0 = [first, second] }
            }
            var source = [UInt8](repeating: 0, count: Self.page)
            for index in source.indices { source[index] = UInt8(truncatingIfNeeded: index) }
            var served = 0
            while served < 2 {
                let ready = try pollReadable([uffd.rawValue], timeoutMilliseconds: 10_000)
                try #require(ready[0], "no fault arrived")
                for fault in try uffd.readFaults() {
                    #expect(!fault.isWrite)
                    let destination = memory.baseAddress + Int(UInt(fault.address) - base)
                    if UInt(fault.address) == base + UInt(Self.page) {
                        try source.withUnsafeBytes { try uffd.copy(to: destination, from: $0.baseAddress!, length: Self.page) }
                    } else {
                        #expect(UInt(fault.address) == base + UInt(3 * Self.page))
                        try uffd.zeroPage(destination, length: Self.page)
                    }
                    served += 1
                }
            }
            reader.join()
            let expected = source[16..<24].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            #expect(seen.value == [expected, 0])

            // Filling a present page again is refused with EEXIST, naming the ioctl.
            do {
                try source.withUnsafeBytes { try uffd.copy(to: memory.baseAddress + Self.page, from: $0.baseAddress!, length: Self.page) }
                Issue.record("UFFDIO_COPY over a present page succeeded")
            } catch let error as SystemError {
                #expect(error.errno == EEXIST)
                #expect(error.call.contains("UFFDIO_COPY"))
            }
            try uffd.unregister(memory.baseAddress, length: memory.size)
        }

        @Test func unregisteredMemoryIsOrdinaryAgain() throws {
            let memory = try MemoryMapping(anonymous: 2 * Self.page)
            let uffd = try UserFaultFD()
            try uffd.registerMissing(memory.baseAddress, length: memory.size)
            try uffd.unregister(memory.baseAddress, length: memory.size)
            // SAFETY (test): inside the live mapping; no longer registered, so no fault is reported.
            memory.baseAddress.storeBytes(of: 7, toByteOffset: 0, as: UInt8.self)
            #expect(memory.baseAddress.load(fromByteOffset: Self.page, as: UInt8.self) == 0)
            #expect(try uffd.readFaults().isEmpty)
        }

        @Test func registeringAnUnalignedRangeNamesTheCall() throws {
            let memory = try MemoryMapping(anonymous: 2 * Self.page)
            let uffd = try UserFaultFD()
            do {
                try uffd.registerMissing(memory.baseAddress + 100, length: Self.page)
                Issue.record("an unaligned range was registered")
            } catch {
                #expect(error.errno == EINVAL)
                #expect(error.description.hasPrefix("ioctl(userfaultfd, UFFDIO_REGISTER, [0x"), "\(error)")
            }
        }

        @Test func userModeOnlyDescriptor() throws {
            // Linux 5.11+: what an unprivileged process may have under vm.unprivileged_userfaultfd=0.
            let uffd = try UserFaultFD(userModeOnly: true)
            let memory = try MemoryMapping(anonymous: Self.page)
            try uffd.registerMissing(memory.baseAddress, length: Self.page)
            // The kernel reading registered memory for this process is not reported: it fails.
            let (readEnd, writeEnd) = try makePipe()
            let written = write(writeEnd.rawValue, memory.baseAddress, 8)
            #expect(written == -1 && clinux_errno() == EFAULT)
            _ = readEnd
        }

        @Test func refusalsNameTheHostSetting() {
            let eperm = UserFaultFDError.unavailable(
                SystemError(call: "userfaultfd(O_CLOEXEC|O_NONBLOCK)", errno: EPERM),
                device: SystemError(call: "open(/dev/userfaultfd)", errno: EACCES))
            #expect(eperm.description.contains("userfaultfd(O_CLOEXEC|O_NONBLOCK) failed: Operation not permitted (errno 1)"))
            #expect(eperm.description.contains("vm.unprivileged_userfaultfd"))
            #expect(eperm.description.contains("/dev/userfaultfd was tried too: open(/dev/userfaultfd) failed"))
            let enosys = UserFaultFDError.unavailable(SystemError(call: "userfaultfd(O_CLOEXEC)", errno: ENOSYS), device: nil)
            #expect(enosys.description.contains("CONFIG_USERFAULTFD"))
            let features = UserFaultFDError.featuresUnsupported(requested: [.missingShmem, .threadID], available: [.threadID])
            #expect(features.description.contains("MISSING_SHMEM"))
        }

        @Test func creatorRefusalReachesTheCaller() {
            let refusing = UserFaultFD.Creator { _ throws(UserFaultFDError) in
                throw .unavailable(SystemError(call: "userfaultfd(O_CLOEXEC)", errno: ENOSYS), device: nil)
            }
            #expect(throws: UserFaultFDError.unavailable(SystemError(call: "userfaultfd(O_CLOEXEC)", errno: ENOSYS), device: nil)) {
                _ = try UserFaultFD(creator: refusing)
            }
        }

        @Test func sparseFileExtents() throws {
            let file = try temporaryFile()
            try file.truncate(to: 1 << 20)
            let data = [UInt8](repeating: 0x42, count: 4096)
            try data.withUnsafeBytes { try file.writeFully($0, at: 512 << 10) }
            #expect(try file.nextData(atOrAfter: 0) == 512 << 10)
            #expect(try file.nextHole(atOrAfter: 512 << 10) == (512 << 10) + 4096)
            #expect(try file.nextData(atOrAfter: (512 << 10) + 4096) == nil)
            #expect(try file.nextHole(atOrAfter: (512 << 10) + 4096) == (512 << 10) + 4096)
            #expect(try file.allocatedBytes() < 64 << 10)
            // A read at the end stops short instead of failing.
            var buffer = [UInt8](repeating: 1, count: 8192)
            let count = try buffer.withUnsafeMutableBytes { try file.readFully(into: $0, at: (1 << 20) - 100) }
            #expect(count == 100)
            #expect(buffer[0..<100].allSatisfy { $0 == 0 })
        }

        @Test func pollReadableReportsEachDescriptor() throws {
            let quiet = try EventFD()
            let loud = try EventFD()
            #expect(try pollReadable([quiet.rawValue, loud.rawValue], timeoutMilliseconds: 0) == [false, false])
            try loud.signal()
            #expect(try pollReadable([quiet.rawValue, loud.rawValue], timeoutMilliseconds: 1000) == [false, true])
        }
    }
}

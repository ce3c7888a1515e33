import CLinux
import Foundation
import HostSystem
import Testing

/// Whether this process may create TAP interfaces (root or CAP_NET_ADMIN, /dev/net/tun).
/// `CH_REQUIRE_TAP=1` (set by .ci/run) turns a missing capability into a failure.
let tapAvailable: Bool = {
    if (try? TapInterface.open(name: nil)) != nil { return true }
    return ProcessInfo.processInfo.environment["CH_REQUIRE_TAP"] == "1"
}()

/// Reads `/sys/class/net/<name>/<file>` without its newline.
func interfaceAttribute(_ name: String, _ file: String) -> String? {
    guard let text = try? String(contentsOfFile: "/sys/class/net/\(name)/\(file)", encoding: .utf8) else { return nil }
    return text.trimmingCharacters(in: .whitespacesAndNewlines)
}

extension HostSystemTests {
    @Suite(.enabled(if: tapAvailable, "skipped: cannot create TAP interfaces here (needs CAP_NET_ADMIN and /dev/net/tun)"))
    struct TapInterfaceTests {
        @Test func createsANamedInterfaceWithAVirtioNetHeader() throws {
            let tap = try TapInterface.open(name: "chtst\(getpid() % 100000)")
            #expect(tap.name == "chtst\(getpid() % 100000)")
            #expect(tap.queues.count == 1)
            #expect(interfaceAttribute(tap.name, "tun_flags").map { UInt32($0.dropFirst(2), radix: 16) ?? 0 }
                .map { $0 & UInt32(IFF_VNET_HDR) != 0 && $0 & UInt32(IFF_TAP) != 0 } == true)
            // Non-blocking: nothing waits, so a read answers EAGAIN instead of hanging.
            var byte: UInt8 = 0
            #expect(read(tap.queues[0].rawValue, &byte, 1) == -1 && clinux_errno() == EAGAIN)
        }

        @Test func patternNamesAndTheInterfaceGoesAwayWithItsDescriptors() throws {
            var name = ""
            do {
                let tap = try TapInterface.open(name: nil)
                name = tap.name
                #expect(name.hasPrefix("vmtap"))
                #expect(FileManager.default.fileExists(atPath: "/sys/class/net/\(name)"))
            }
            #expect(!FileManager.default.fileExists(atPath: "/sys/class/net/\(name)"))
        }

        @Test func closeRemovesTheInterfaceWhileItIsStillReferenced() throws {
            let name = "chcls\(getpid() % 100000)"
            let tap = try TapInterface.open(name: name, queueCount: 2)
            let other = tap.queues[0]  // a second owner, as a device would hold it
            tap.close()
            #expect(!FileManager.default.fileExists(atPath: "/sys/class/net/\(name)"))
            #expect(other.rawValue == -1)
            // The name can be taken again at once (TUNSETIFF would answer EBUSY otherwise).
            let again = try TapInterface.open(name: name)
            #expect(again.name == name)
            tap.close()  // a second close does nothing
        }

        @Test func multiQueueOpensOneDescriptorPerQueue() throws {
            let tap = try TapInterface.open(name: nil, queueCount: 3)
            #expect(tap.queues.count == 3)
            #expect(Set(tap.queues.map(\.rawValue)).count == 3)
            let flags = UInt32(interfaceAttribute(tap.name, "tun_flags")?.dropFirst(2) ?? "", radix: 16) ?? 0
            #expect(flags & UInt32(IFF_MULTI_QUEUE) != 0)
        }

        @Test func hostSideSettings() throws {
            let tap = try TapInterface.open(name: nil)
            try tap.setMACAddress([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef])
            #expect(try tap.macAddress() == [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef])
            #expect(interfaceAttribute(tap.name, "address") == "52:54:00:ab:cd:ef")
            try tap.setMTU(1400)
            #expect(try tap.mtu() == 1400)
            try tap.setIPv4(address: "10.213.7.1", netmask: "255.255.255.0")
            try tap.setUp()
            #expect((Int(interfaceAttribute(tap.name, "flags")?.dropFirst(2) ?? "", radix: 16) ?? 0) & 1 == 1)
        }

        @Test func badSettingsNameTheInterface() throws {
            let tap = try TapInterface.open(name: nil)
            #expect(throws: TapError.self) { try tap.setIPv4(address: "10.1.2", netmask: "255.0.0.0") }
            do {
                try tap.setIPv4(address: "10.1.2.300", netmask: "255.0.0.0")
                Issue.record("a bad address was accepted")
            } catch {
                #expect(error.description.contains(tap.name))
                #expect(error.description.contains("10.1.2.300"))
            }
            #expect(throws: TapError.self) { try TapInterface.open(name: "a-name-far-too-long-for-linux") }
        }

        @Test func privilegeErrorsSayWhatIsMissing() {
            let error = TapError(interface: "tap0", action: "create", cause: SystemError(call: "ioctl(TUNSETIFF)", errno: EPERM))
            #expect(error.description.contains("CAP_NET_ADMIN"))
            #expect(error.description.contains("tap0"))
        }

        @Test func adoptsHandedOverDescriptorsAndKeepsThemOpen() throws {
            let tap = try TapInterface.open(name: nil, queueCount: 2)
            let raw = tap.queues.map(\.rawValue)
            do {
                let adopted = try TapInterface.adopt(raw)
                #expect(adopted.name == tap.name)
                #expect(adopted.queues.count == 2)
                #expect(!adopted.queues.map(\.rawValue).contains(raw[0]))
            }
            // The caller's descriptors survive the adopting object.
            #expect(clinux_fcntl_val(raw[0], F_GETFD, 0) != -1)
            let null = try OwnedFileDescriptor(path: "/dev/null", flags: O_RDWR)
            do {
                _ = try TapInterface.adopt([null.rawValue])
                Issue.record("/dev/null was adopted as a TAP")
            } catch {
                #expect(error.description.contains("not a TAP"))
            }
            #expect(throws: TapError.self) { try TapInterface.adopt([987]) }
        }

        /// A real packet exchange with the host's network stack: an ARP request for the
        /// host-side address, written with its virtio-net header, is answered through the
        /// same descriptor.
        @Test func hostAnswersAnARPRequestThroughTheTap() throws {
            let tap = try TapInterface.open(name: nil)
            try tap.setIPv4(address: "10.213.8.1", netmask: "255.255.255.0")
            try tap.setUp()
            let guestMAC: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
            var packet = [UInt8](repeating: 0, count: 12)                    // virtio_net_hdr_v1
            packet += [UInt8](repeating: 0xff, count: 6) + guestMAC + [0x08, 0x06]
            packet += [0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01] + guestMAC + [10, 213, 8, 2]
            packet += [UInt8](repeating: 0, count: 6) + [10, 213, 8, 1]
            let written = packet.withUnsafeBytes { write(tap.queues[0].rawValue, $0.baseAddress, $0.count) }
            #expect(written == packet.count)
            let deadline = ContinuousClock.now + .seconds(5)
            var answered = false
            var buffer = [UInt8](repeating: 0, count: 2048)
            while !answered, ContinuousClock.now < deadline {
                var entry = pollfd(fd: tap.queues[0].rawValue, events: Int16(POLLIN), revents: 0)
                guard poll(&entry, 1, 200) > 0 else { continue }
                let count = buffer.withUnsafeMutableBytes { read(tap.queues[0].rawValue, $0.baseAddress, $0.count) }
                guard count >= 12 + 42 else { continue }
                let frame = buffer[12..<count]
                let start = frame.startIndex
                if frame[start + 12] == 0x08, frame[start + 13] == 0x06, frame[start + 21] == 2 {
                    #expect(Array(frame[start..<start + 6]) == guestMAC)
                    #expect(Array(frame[start + 28..<start + 32]) == [10, 213, 8, 1])
                    answered = true
                }
            }
            #expect(answered, "no ARP reply from the host within 5 s")
        }
    }
}

// fuzz-vhost-user-request: a hostile vhost-user front-end's messages to the back-end that
// vhost_user_block and vhost_user_net run (VhostUserDeviceBackend serving a virtio-blk
// device). The input is a stream of messages, each with a control byte: its low two bits are
// how many descriptors (dups of a 64 KiB memfd) go with it, bit 2 takes the 12-byte header raw
// from the input instead of building a well-formed one. Everything is written to a socket
// pair, the sending end closed, and the back-end serves the other end: it must return (the
// front-end left) or refuse a message with a sentence, never crash.
import BlockStorage
import FuzzSupport
import HostSystem
import VhostUser
import VhostUserBackend
import VirtioDevices

@main
enum VhostUserRequestFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

/// The file whose descriptor every message that passes one carries.
nonisolated(unsafe) private let memoryFile = try! OwnedFileDescriptor.memoryFile(name: "fuzz-vu", size: 65536)

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        guard let (frontend, backendEnd) = try? UnixSocket.pair() else { return }
        var sent = 0
        while !input.isExhausted && sent < 64 {
            let control = input.byte()
            var message: [UInt8]
            if control & 4 != 0 {
                message = input.bytes(count: 12)
                message += input.bytes(count: Int(input.byte()))
            } else {
                let request = UInt32(input.byte() % 40)
                let flags = VhostUserFlags.version | (input.byte() & 1 == 0 ? 0 : VhostUserFlags.needReply)
                let payload = input.bytes(count: Int(input.byte()))
                message = VhostUserHeader(request: VhostUserRequest(rawValue: request), flags: flags, size: UInt32(payload.count)).bytes + payload
            }
            guard !message.isEmpty else { break }
            var passed: [OwnedFileDescriptor] = []
            for _ in 0..<Int(control & 3) {
                if let copy = try? memoryFile.duplicate() { passed.append(copy) }
            }
            guard (try? frontend.sendAll(message, descriptors: passed.map(\.rawValue))) != nil else { break }
            sent += 1
        }
        try? frontend.shutdown(.writing)
        let device = VirtioBlock(backend: MemoryBlockBackend(size: 65536), options: VirtioBlock.Options(queueSize: 16))
        guard let backend = try? VhostUserDeviceBackend(device: device) else { return }
        if let reason = backend.serve(backendEnd) {
            fuzzCheck(!reason.isEmpty, "a refusal without a reason")
        }
    }
}

/// A message as QEMU sends it: `control` byte 0 (no descriptor, built header), request, flags, payload.
private func message(_ request: UInt32, _ payload: [UInt8], descriptors: UInt8 = 0, needReply: Bool = false) -> [UInt8] {
    [descriptors, UInt8(request), needReply ? 1 : 0, UInt8(payload.count)] + payload
}

/// QEMU's start-up sequence for a vhost-user-blk device, and a few broken messages.
private func seeds() -> [[UInt8]] {
    let region = VhostUserMemoryRegion(guestPhysicalAddress: 0, size: 65536, userAddress: 0x7f00_0000_0000, mmapOffset: 0)
    let start = message(1, []) + message(15, []) + message(16, VhostUserPayload.u64(0x209)) + message(17, [])
        + message(24, VhostUserPayload.config(offset: 0, size: 60)) + message(3, [])
        + message(2, VhostUserPayload.u64(1 << 32 | 1 << 30 | 1 << 9))
        + message(5, VhostUserPayload.memoryTable([region]), descriptors: 1, needReply: true)
        + message(8, VhostUserPayload.vringState(index: 0, value: 16), needReply: true)
        + message(10, VhostUserPayload.vringState(index: 0, value: 0))
        + message(9, VhostUserPayload.vringAddress(VhostUserVringAddress(index: 0, descriptorTable: 0x7f00_0000_1000,
                                                                          usedRing: 0x7f00_0000_3000, availableRing: 0x7f00_0000_2000)))
        + message(18, VhostUserPayload.vringState(index: 0, value: 1))
        + message(11, VhostUserPayload.vringState(index: 0, value: 0))
    return [
        start,
        message(5, VhostUserPayload.memoryTable([region, region]), descriptors: 2),
        message(37, [0, 0, 0, 0, 0, 0, 0, 0] + VhostUserPayload.memoryTable([region]).dropFirst(8), descriptors: 1),
        message(25, [0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]),
        [4] + VhostUserHeader(request: .setOwner, flags: 0x5, size: 0).bytes + [0],
        message(12, VhostUserPayload.vringDescriptor(index: 0, hasDescriptor: true), descriptors: 1),
    ]
}

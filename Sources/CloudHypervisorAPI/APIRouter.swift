// From a parsed request to a response: routing, body checks, and the VMMControl call. Runs
// on the API's worker thread (never on an event loop): control calls block.
import HostSystem
import JSONCoding
import VMM

/// A complete HTTP request as the router sees it.
public struct APIRequest: Sendable {
    /// The method.
    public var method: HTTPMethod
    /// The request target (`/api/v1/vm.info`).
    public var uri: String
    /// The body; `nil` when the request had none (or an empty one).
    public var body: [UInt8]?
    /// Descriptors passed with the request as SCM_RIGHTS ancillary data, in order. The router
    /// hands them to the action that takes them (`vm.add-net`, `vm.create`'s NICs); any it
    /// does not hand on are closed when the request is done.
    public var fileDescriptors: [OwnedFileDescriptor]

    /// Creates a request.
    public init(method: HTTPMethod, uri: String, body: [UInt8]? = nil, fileDescriptors: [OwnedFileDescriptor] = []) {
        self.method = method
        self.uri = uri
        self.body = body
        self.fileDescriptors = fileDescriptors
    }
}

/// A response: status and an optional JSON body.
public struct APIResponse: Sendable, Equatable {
    /// The status.
    public var status: HTTPStatus
    /// The JSON body, if any.
    public var body: [UInt8]?

    /// Creates a response.
    public init(status: HTTPStatus, body: [UInt8]? = nil) {
        self.status = status
        self.body = body
    }

    /// The response for a refusal: its status and the JSON list of messages.
    public init(error: APIError) {
        status = error.status
        body = (try? JSONCoding.encode(error.messages)) ?? Array("[]".utf8)
    }
}

/// Routes requests to a `VMMControl`. Stateless apart from the control; safe to call from
/// several threads if the control is.
public struct APIRouter: Sendable {
    /// The VMM being controlled.
    public let control: any VMMControl

    /// Creates a router for `control`.
    public init(control: any VMMControl) {
        self.control = control
    }

    /// Answers one request. Blocks while the control acts (a boot takes a while).
    public func respond(to request: APIRequest) -> APIResponse {
        do {
            return try route(request)
        } catch {
            return APIResponse(error: error)
        }
    }

    private func route(_ request: APIRequest) throws(APIError) -> APIResponse {
        guard let endpoint = APIEndpoint(path: request.uri) else { throw .notFound(path: request.uri) }
        guard request.method == endpoint.method else {
            throw .wrongMethod(endpoint: endpoint.rawValue, allowed: endpoint.method, received: request.method)
        }
        let body = request.body.flatMap { $0.isEmpty ? nil : $0 }
        switch endpoint.body {
        case .ignored:
            break
        case .none:
            if body != nil { throw .unexpectedBody(endpoint: endpoint.rawValue) }
        case .vmConfig:
            guard body != nil else { throw .missingBody(endpoint: endpoint.rawValue, schema: "VmConfig") }
        case let .object(schema):
            guard body != nil else { throw .missingBody(endpoint: endpoint.rawValue, schema: schema) }
        case let .unsupported(schema):
            guard let body else { throw .missingBody(endpoint: endpoint.rawValue, schema: schema) }
            try StrictJSON.requireObject(body, typeName: schema)
        }
        return try perform(endpoint, body: body, descriptors: request.fileDescriptors)
    }

    private func perform(_ endpoint: APIEndpoint, body: [UInt8]?, descriptors: [OwnedFileDescriptor]) throws(APIError) -> APIResponse {
        func act(_ action: () throws(ControlError) -> Void) throws(APIError) -> APIResponse {
            do { try action() } catch { throw .control(endpoint: endpoint.rawValue, error) }
            return APIResponse(status: .noContent)
        }
        switch endpoint {
        case .vmmPing:
            return try json(control.ping())
        case .vmmShutdown:
            // Cloud Hypervisor answers vmm.shutdown with 200 and no body (VmmShutdown's handler).
            do { try control.shutdownVMM() } catch { throw .control(endpoint: endpoint.rawValue, error) }
            return APIResponse(status: .ok)
        case .vmCreate:
            var config = try StrictJSON.decode(VMConfig.self, from: body ?? [], typeName: "VmConfig")
            try attach(descriptors, toNetsOf: &config)
            if let absent = config.absentFeatures.first { throw .control(endpoint: endpoint.rawValue, .absentFeature(absent)) }
            do {
                try config.validate()
            } catch {
                throw .control(endpoint: endpoint.rawValue, .invalidConfig(error.description))
            }
            let passed = descriptors
            return try act { () throws(ControlError) in try control.create(config, descriptors: passed) }
        case .vmBoot: return try act(control.boot)
        case .vmDelete: return try act(control.delete)
        case .vmPause: return try act(control.pause)
        case .vmResume: return try act(control.resume)
        case .vmShutdown: return try act(control.shutdown)
        case .vmReboot: return try act(control.reboot)
        case .vmPowerButton: return try act(control.powerButton)
        case .vmInfo:
            let info: VMInfo
            do { info = try control.info() } catch { throw .control(endpoint: endpoint.rawValue, error) }
            return try json(info)
        case .vmCounters:
            let counters: [String: [String: UInt64]]
            do { counters = try control.counters() } catch { throw .control(endpoint: endpoint.rawValue, error) }
            return try json(counters)
        case .vmResize:
            let request = try StrictJSON.decode(VMResize.self, from: body ?? [], typeName: "VmResize")
            return try act { () throws(ControlError) in try control.resize(request) }
        case .vmAddDisk:
            let disk = try StrictJSON.decode(DiskConfig.self, from: body ?? [], typeName: "DiskConfig")
            if let absent = disk.absentFeatures().first { throw .control(endpoint: endpoint.rawValue, .absentFeature(absent)) }
            return try added(endpoint) { () throws(ControlError) in try control.addDisk(disk) }
        case .vmAddNet:
            var net = try StrictJSON.decode(NetConfig.self, from: body ?? [], typeName: "NetConfig")
            if let absent = net.absentFeatures().first { throw .control(endpoint: endpoint.rawValue, .absentFeature(absent)) }
            net.fds = nil
            let passed = descriptors
            return try added(endpoint) { () throws(ControlError) in try control.addNet(net, descriptors: passed) }
        case .vmRemoveDevice:
            let request = try StrictJSON.decode(VMRemoveDevice.self, from: body ?? [], typeName: "VmRemoveDevice")
            guard let id = request.id, !id.isEmpty else { throw .invalidBody("VmRemoveDevice: field 'id' is required") }
            return try act { () throws(ControlError) in try control.removeDevice(id: id) }
        case .vmAddFs:
            let fs = try StrictJSON.decode(FsConfig.self, from: body ?? [], typeName: "FsConfig")
            if let absent = fs.absentFeatures().first { throw .control(endpoint: endpoint.rawValue, .absentFeature(absent)) }
            do { try fs.validate() } catch { throw .control(endpoint: endpoint.rawValue, .invalidConfig(error.description)) }
            return try added(endpoint) { () throws(ControlError) in try control.addFs(fs) }
        case .vmAddPmem:
            let pmem = try StrictJSON.decode(PmemConfig.self, from: body ?? [], typeName: "PmemConfig")
            if let absent = pmem.absentFeatures().first { throw .control(endpoint: endpoint.rawValue, .absentFeature(absent)) }
            do { try pmem.validate() } catch { throw .control(endpoint: endpoint.rawValue, .invalidConfig(error.description)) }
            return try added(endpoint) { () throws(ControlError) in try control.addPmem(pmem) }
        case .vmAddVsock:
            let vsock = try StrictJSON.decode(VsockConfig.self, from: body ?? [], typeName: "VsockConfig")
            if let absent = vsock.absentFeatures().first { throw .control(endpoint: endpoint.rawValue, .absentFeature(absent)) }
            do { try vsock.validate() } catch { throw .control(endpoint: endpoint.rawValue, .invalidConfig(error.description)) }
            return try added(endpoint) { () throws(ControlError) in try control.addVsock(vsock) }
        case .vmAddVdpa:
            _ = try StrictJSON.decode(VdpaConfig.self, from: body ?? [], typeName: "VdpaConfig")
            throw .control(endpoint: endpoint.rawValue, .absentFeature(AbsentFeature(field: "vdpa", option: "--vdpa", feature: "vDPA devices")))
        case .vmAddDevice:
            _ = try StrictJSON.decode(DeviceConfig.self, from: body ?? [], typeName: "DeviceConfig")
            throw .control(endpoint: endpoint.rawValue, .absentFeature(AbsentFeature(field: "devices", option: "--device", feature: "VFIO device assignment")))
        case .vmAddUserDevice:
            _ = try StrictJSON.decode(UserDeviceConfig.self, from: body ?? [], typeName: "VmAddUserDevice")
            throw .control(endpoint: endpoint.rawValue, .absentFeature(AbsentFeature(field: "user_devices", option: "--user-device", feature: "vfio-user devices")))
        case .vmAddGenericVhostUser:
            _ = try StrictJSON.decode(GenericVhostUserConfig.self, from: body ?? [], typeName: "GenericVhostUserConfig")
            throw .control(endpoint: endpoint.rawValue,
                           .absentFeature(AbsentFeature(field: "generic_vhost_user", option: "--generic-vhost-user", feature: "generic vhost-user devices")))
        case .vmSnapshot:
            let request = try StrictJSON.decode(VMDestination.self, from: body ?? [], typeName: "VmSnapshotConfig")
            return try act { () throws(ControlError) in try control.snapshot(destinationURL: request.destinationURL) }
        case .vmRestore:
            let request = try StrictJSON.decode(RestoreConfig.self, from: body ?? [], typeName: "RestoreConfig")
            let passed = descriptors
            return try act { () throws(ControlError) in try control.restore(request, descriptors: passed) }
        case .vmSendMigration:
            let request = try StrictJSON.decode(SendMigrationData.self, from: body ?? [], typeName: "SendMigrationData")
            return try act { () throws(ControlError) in try control.sendMigration(request) }
        case .vmReceiveMigration:
            let request = try StrictJSON.decode(ReceiveMigrationData.self, from: body ?? [], typeName: "ReceiveMigrationData")
            return try act { () throws(ControlError) in try control.receiveMigration(request) }
        case .vmResizeDisk:
            let request = try StrictJSON.decode(VMResizeDisk.self, from: body ?? [], typeName: "VmResizeDisk")
            return try act { () throws(ControlError) in try control.resizeDisk(request) }
        case .vmNmi, .vmResizeZone, .vmCoredump:
            // The body is decoded as Cloud Hypervisor decodes it (a bad one is a 400), then the
            // action is refused: this VMM does not carry it out yet.
            let bytes = body ?? []
            switch endpoint {
            case .vmResizeZone: _ = try StrictJSON.decode(VMResizeZone.self, from: bytes, typeName: "VmResizeZone")
            case .vmCoredump: _ = try StrictJSON.decode(VMDestination.self, from: bytes, typeName: "VmCoredumpData")
            default: break
            }
            throw .control(endpoint: endpoint.rawValue, .unsupported(action: endpoint.rawValue))
        }
    }

    /// Answers a `vm.add-*`: 204 when the device went into the configuration of a VM not
    /// booted yet, 200 with `PciDeviceInfo` when it was added to the running VM.
    private func added(_ endpoint: APIEndpoint, _ action: () throws(ControlError) -> PciDeviceInfo?) throws(APIError) -> APIResponse {
        let info: PciDeviceInfo?
        do { info = try action() } catch { throw .control(endpoint: endpoint.rawValue, error) }
        guard let info else { return APIResponse(status: .noContent) }
        return try json(info)
    }

    /// Gives `vm.create`'s NICs the descriptors passed with the request, as Cloud Hypervisor
    /// matches them: in order, as many to each NIC as its `fds` lists. Numbers written in the
    /// body are never taken as this process's descriptors; without passed ones they are dropped.
    private func attach(_ descriptors: [OwnedFileDescriptor], toNetsOf config: inout VMConfig) throws(APIError) {
        guard var nets = config.net else {
            guard descriptors.isEmpty else { throw .invalidBody("VmConfig: \(descriptors.count) descriptor(s) were passed but no NIC lists fds") }
            return
        }
        let wanted = nets.reduce(0) { $0 + ($1.fds?.count ?? 0) }
        if descriptors.isEmpty {
            for index in nets.indices { nets[index].fds = nil }
        } else {
            guard wanted == descriptors.count else {
                throw .invalidBody("VmConfig: the NICs' fds list \(wanted) descriptor(s) but \(descriptors.count) were passed with the request")
            }
            var next = 0
            for index in nets.indices {
                guard let count = nets[index].fds?.count else { continue }
                nets[index].fds = descriptors[next..<(next + count)].map(\.rawValue)
                next += count
            }
        }
        config.net = nets
    }

    private func json(_ value: some Encodable) throws(APIError) -> APIResponse {
        do {
            // Sorted keys (responses are reproducible) and '/' unescaped.
            return APIResponse(status: .ok, body: try JSONCoding.encode(value, sortedKeys: true))
        } catch {
            throw .control(endpoint: "response", .failed(action: "encoding the response", reason: "\(error)"))
        }
    }
}

package bridge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// AzureAPIVersion is the IoT Hub API version named in the MQTT user name.
const AzureAPIVersion = "2021-04-12"

// ConnectionString is a parsed Azure IoT Hub device connection string.
type ConnectionString struct {
	HostName        string // <hub>.azure-devices.net
	DeviceID        string
	SharedAccessKey []byte // decoded
	KeyName         string // SharedAccessKeyName, for a hub-level policy; usually empty
}

// ParseConnectionString parses HostName=...;DeviceId=...;SharedAccessKey=...
func ParseConnectionString(s string) (*ConnectionString, error) {
	cs := &ConnectionString{}
	var key string
	for part := range strings.SplitSeq(s, ";") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("connection string: %q is not key=value", part)
		}
		switch k {
		case "HostName":
			cs.HostName = v
		case "DeviceId":
			cs.DeviceID = v
		case "SharedAccessKey":
			key = v
		case "SharedAccessKeyName":
			cs.KeyName = v
		}
	}
	switch {
	case cs.HostName == "":
		return nil, fmt.Errorf("connection string has no HostName")
	case cs.DeviceID == "":
		return nil, fmt.Errorf("connection string has no DeviceId")
	case key == "":
		return nil, fmt.Errorf("connection string has no SharedAccessKey")
	}
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return nil, fmt.Errorf("connection string: SharedAccessKey is not base64: %w", err)
	}
	cs.SharedAccessKey = k
	return cs, nil
}

// Username is the MQTT user name IoT Hub expects.
func (cs *ConnectionString) Username() string {
	return cs.HostName + "/" + cs.DeviceID + "/?api-version=" + AzureAPIVersion
}

// SASToken returns a SharedAccessSignature for the device valid until
// expiry: HMAC-SHA256, keyed with the decoded key, over the URL-encoded
// resource URI "<HostName>/devices/<DeviceId>", a newline and the expiry in
// Unix seconds; the signature is base64 and then URL-encoded.
func (cs *ConnectionString) SASToken(expiry time.Time) string {
	sr := url.QueryEscape(cs.HostName + "/devices/" + cs.DeviceID)
	se := strconv.FormatInt(expiry.Unix(), 10)
	mac := hmac.New(sha256.New, cs.SharedAccessKey)
	mac.Write([]byte(sr + "\n" + se))
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	tok := "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se
	if cs.KeyName != "" {
		tok += "&skn=" + url.QueryEscape(cs.KeyName)
	}
	return tok
}

// Azure topics. Telemetry goes to events/ with the mapped topic in the
// property bag; cloud-to-device messages come from devicebound/.
func azureEventsTopic(device, remoteTopic string) string {
	return "devices/" + device + "/messages/events/topic=" + url.QueryEscape(remoteTopic)
}

func azureDeviceboundFilter(device string) string {
	return "devices/" + device + "/messages/devicebound/#"
}

// azureInboundTopic returns the remote topic a cloud-to-device message stands
// for: its "topic" application property, or "devicebound" without one.
func azureInboundTopic(device, topic string) string {
	bag := strings.TrimPrefix(topic, "devices/"+device+"/messages/devicebound/")
	if v, err := url.ParseQuery(bag); err == nil {
		if t := v.Get("topic"); t != "" {
			return t
		}
	}
	return "devicebound"
}

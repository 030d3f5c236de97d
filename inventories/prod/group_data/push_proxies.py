"""This site's push proxy hosts (EAS): the release and the app credentials. Secrets are never
in this repository: the files live on the control node (outside the repository) or come from
the environment ("env:NAME"). Where they come from: docs/before-you-start.md."""

push_proxy_version = "6.5.0"
# Releases publish no checksums: download the archive once, check it, pin its sha256 here.
push_proxy_sha256 = (
    "CHANGE-ME: the sha256 of mattermost-push-proxy-linux-amd64.tar.gz for push_proxy_version "
    "(docs/before-you-start.md, 'Pin the release')"
)

# One entry per iOS app type your custom-built apps use (apple_rn: the React Native app).
push_proxy_apple = [
    {
        "type": "apple_rn",
        "topic": "CHANGE-ME: your iOS app's bundle id, e.g. com.example.mattermost",
        "auth_key_file": "CHANGE-ME: path on this control node to AuthKey_<KEYID>.p8",
        "auth_key_id": "CHANGE-ME: the 10-character key id of that .p8",
        "team_id": "CHANGE-ME: your 10-character Apple Developer team id",
    }
]

# One entry per Android app type (android_rn: the React Native app).
push_proxy_android = [
    {
        "type": "android_rn",
        "service_account_file": "CHANGE-ME: path on this control node to the FCM "
        "service-account JSON of your Firebase project",
    }
]

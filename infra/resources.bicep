// lookout-reminders: everything inside one resource group (deployed by main.bicep, or directly
// with `az deployment group create -g <rg> -f infra/resources.bicep -p ...`).
//
// One user-assigned managed identity does everything: host storage, export, ledger,
// Application Insights ingestion, Key Vault references, Graph, and the Azure Bot (which must be
// created with that identity). No key, connection secret or client secret exists anywhere.
// Every role assignment is scoped to the one container, secret or component it is needed on.
//
// App settings are built from the `settings*` objects below. tests/it/infra_settings.rs reads
// them: every `%SETTING%` of a function.json must be in settingsCore, and the settings of each
// channel / source must pass the product's own start-up validation. Keep each block a flat
// object literal, one `NAME: value` per line.

@minLength(1)
param environmentName string
param location string = resourceGroup().location
param tags object = {}

@allowed([
  'FlexConsumption'
  'Premium'
])
param hostingPlan string = 'FlexConsumption'

@description('Primary channel then fallbacks, comma-separated: teams_bot, workflows, email.')
param channels string

@allowed([
  'blob'
  'sharepoint'
])
param source string = 'blob'

param reminderSchedule string = '0 */20 7-8 * * 1-5'
param timeZone string = 'Europe/Paris'
param allowedDomains string = ''
param language string = 'fr'
param contactEmail string = ''
param signature string = ''
param maxOwnersPerRun int = 2000
param exportBlob string = ''
param exportPrefix string = 'lookout/'
param sharePointSiteUrl string = ''
param sharePointLibrary string = ''
param sharePointFilePath string = ''
param reportSharePointFolder string = ''
param teamsAppId string = ''
param senderMailbox string = ''

@secure()
param workflowsUrl string = ''

@secure()
param digestWebhookUrl string = ''

param escalateToManager bool = false

@description('Flex Consumption: most instances the app may scale out to (a daily job needs few).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var isFlex = hostingPlan == 'FlexConsumption'
var channelList = split(replace(toLower(channels), ' ', ''), ',')
var useBot = contains(channelList, 'teams_bot')
var useWorkflows = contains(channelList, 'workflows')
var useEmail = contains(channelList, 'email') || !empty(senderMailbox)
var useDigest = !empty(digestWebhookUrl)

var identityName = 'id-${environmentName}'
var storageAccountName = 'st${resourceToken}'
var planName = 'plan-${resourceToken}'
var functionAppName = 'func-${resourceToken}'
var logAnalyticsName = 'log-${resourceToken}'
var appInsightsName = 'appi-${resourceToken}'
var vaultName = 'kv-${resourceToken}'
var botName = 'bot-${resourceToken}'
var exportsContainerName = 'exports'
var stateContainerName = 'reminders-state'
// The Functions host keeps its timer schedule monitor and leases in azure-webjobs-hosts and
// its function keys in azure-webjobs-secrets; Flex Consumption reads the package from
// app-package.
var hostContainerNames = [
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
  'app-package'
]
var workflowsSecretName = 'reminders-workflows-url'
var digestSecretName = 'reminders-digest-webhook-url'

// Built-in role ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var roleBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
var roleBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var roleBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var roleKeyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var roleMonitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_43: the name is 'st' + uniqueString(), which checkov cannot evaluate; it is 15 lower-case letters and digits
  // checkov:skip=CKV_AZURE_35: the Function App reaches the account over the public endpoint (no virtual network on this plan); shared keys are disabled, so only Entra tokens of granted identities get in
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35, public network access is needed without a virtual network
  name: storageAccountName
  // checkov:skip=CKV_AZURE_206: exports are re-sent daily and the ledger is small; LRS is enough, GRS doubles the cost
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource exportsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (source == 'blob') {
  parent: blobService
  name: exportsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: stateContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource hostContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for name in hostContainerNames: {
  parent: blobService
  name: name
  properties: {
    publicAccess: 'None'
  }
}]

// Read the export, nothing else.
resource exportsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (source == 'blob') {
  name: guid(exportsContainer.id, identity.id, roleBlobDataReader)
  scope: exportsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleBlobDataReader)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Ledger segments, the run lock (a lease) and run reports.
resource stateContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateContainer.id, identity.id, roleBlobDataContributor)
  scope: stateContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleBlobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The Functions host with identity-based AzureWebJobsStorage needs Storage Blob Data Owner
// (https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity),
// here on its own containers only.
resource hostOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (name, i) in hostContainerNames: {
  name: guid(hostContainers[i].id, identity.id, roleBlobDataOwner)
  scope: hostContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

// Ingestion with Entra ID only (DisableLocalAuth): the app authenticates with
// APPLICATIONINSIGHTS_AUTHENTICATION_STRING and the identity's Monitoring Metrics Publisher role.
resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

resource appInsightsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roleMonitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleMonitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The two webhook URLs carry a signature: they live in Key Vault (RBAC mode) and reach the app
// as Key Vault references resolved with the user-assigned identity. The vault is created even
// when empty (no fixed cost) so that checkov sees its settings: it cannot look inside
// conditional resources.
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: App Service resolves Key Vault references over the public endpoint unless the app is in a virtual network; access is RBAC-only, per secret
  // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109
  name: vaultName
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource workflowsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (useWorkflows) {
  // checkov:skip=CKV_AZURE_41: a Workflows webhook URL has no expiry of its own; it is rotated by re-creating the flow trigger
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov does not read the properties of a conditional resource
  parent: vault
  name: workflowsSecretName
  properties: {
    value: workflowsUrl
    contentType: 'text/uri'
  }
}

resource digestSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (useDigest) {
  // checkov:skip=CKV_AZURE_41: a Workflows webhook URL has no expiry of its own; it is rotated by re-creating the flow trigger
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov does not read the properties of a conditional resource
  parent: vault
  name: digestSecretName
  properties: {
    value: digestWebhookUrl
    contentType: 'text/uri'
  }
}

resource workflowsSecretReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useWorkflows) {
  name: guid(vaultName, workflowsSecretName, identity.id, roleKeyVaultSecretsUser)
  scope: workflowsSecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleKeyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource digestSecretReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useDigest) {
  name: guid(vaultName, digestSecretName, identity.id, roleKeyVaultSecretsUser)
  scope: digestSecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleKeyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: a daily batch job does not justify zone redundancy (at least three always-on instances on Premium)
  name: planName
  location: location
  tags: tags
  kind: isFlex ? 'functionapp' : 'elastic'
  sku: isFlex ? {
    name: 'FC1'
    tier: 'FlexConsumption'
  } : {
    name: 'EP1'
    tier: 'ElasticPremium'
  }
  properties: {
    reserved: true
    maximumElasticWorkerCount: isFlex ? null : 3
  }
}

var flexConfig = {
  deployment: {
    storage: {
      type: 'blobContainer'
      value: '${storage.properties.primaryEndpoints.blob}app-package'
      authentication: {
        type: 'UserAssignedIdentity'
        userAssignedIdentityResourceId: identity.id
      }
    }
  }
  scaleAndConcurrency: {
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: 2048
  }
  runtime: {
    name: 'custom'
    version: '1.0'
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: the HTTP function is protected by its function key (authLevel function); client certificates would break the host's own calls and the timer needs none
  // checkov:skip=CKV_AZURE_222: public network access is needed without a virtual network; the only endpoint is key-protected
  name: functionAppName
  // checkov:skip=CKV_AZURE_16: the identity is user-assigned (identity block below); App Service authentication is not used: operators call the HTTP function with its function key
  // checkov:skip=CKV_AZURE_212: a daily batch job; a second always-on instance for failover would double the cost for nothing (the timer catches up a missed run)
  location: location
  // checkov:skip=CKV_AZURE_213: the host already checks the handler (GET /) before routing to it; an App Service health check would need an anonymous endpoint
  tags: union(tags, {
    'azd-service-name': 'reminders'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: identity.id
    functionAppConfig: isFlex ? flexConfig : null
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
  }
  // The host needs its storage and the app its roles from the first start.
  dependsOn: [
    hostOwner
    stateContributor
    appInsightsPublisher
  ]
}

// Host storage (identity-based), monitoring, schedule and everything every deployment needs.
var settingsCore = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  REMINDER_SCHEDULE: reminderSchedule
  REMINDERS_CHANNEL: channels
  REMINDERS_SOURCE: source
  REMINDERS_LEDGER: 'blob'
  REMINDERS_STATE_ACCOUNT_URL: storage.properties.primaryEndpoints.blob
  REMINDERS_STATE_CONTAINER: stateContainerName
  REMINDERS_CREDENTIAL: 'managed_identity'
  REMINDERS_MANAGED_IDENTITY_CLIENT_ID: identity.properties.clientId
  AZURE_CLIENT_ID: identity.properties.clientId
  REMINDERS_TENANT_ID: tenant().tenantId
  REMINDERS_TIME_ZONE: timeZone
  REMINDERS_ALLOWED_DOMAINS: allowedDomains
  REMINDERS_LANGUAGE: language
  REMINDERS_CONTACT_EMAIL: contactEmail
  REMINDERS_SIGNATURE: signature
  REMINDERS_MAX_OWNERS_PER_RUN: string(maxOwnersPerRun)
  REMINDERS_ESCALATE_TO_MANAGER: toLower(string(escalateToManager))
  REMINDERS_LOG_FORMAT: 'json'
}

// Premium only: Flex Consumption takes the runtime from functionAppConfig and refuses these.
var settingsPremium = {
  FUNCTIONS_EXTENSION_VERSION: '~4'
  FUNCTIONS_WORKER_RUNTIME: 'custom'
  WEBSITE_RUN_FROM_PACKAGE: '1'
  WEBSITE_TIME_ZONE: timeZone
}

var settingsBlobSource = {
  REMINDERS_BLOB_ACCOUNT_URL: storage.properties.primaryEndpoints.blob
  REMINDERS_EXPORT_CONTAINER: exportsContainerName
  REMINDERS_EXPORT_BLOB: exportBlob
  REMINDERS_EXPORT_PREFIX: empty(exportBlob) ? exportPrefix : ''
}

var settingsSharePointSource = {
  REMINDERS_SHAREPOINT_SITE_URL: sharePointSiteUrl
  REMINDERS_SHAREPOINT_LIBRARY: sharePointLibrary
  REMINDERS_SHAREPOINT_FILE_PATH: sharePointFilePath
  REMINDERS_REPORT_SHAREPOINT_FOLDER: reportSharePointFolder
}

var settingsTeamsBot = {
  REMINDERS_TEAMS_APP_ID: teamsAppId
  REMINDERS_BOT_APP_ID: identity.properties.clientId
}

var settingsEmail = {
  REMINDERS_SENDER_MAILBOX: senderMailbox
}

var settingsWorkflows = {
  REMINDERS_WORKFLOWS_URL: '@Microsoft.KeyVault(VaultName=${vaultName};SecretName=${workflowsSecretName})'
}

var settingsDigest = {
  REMINDERS_DIGEST_WEBHOOK_URL: '@Microsoft.KeyVault(VaultName=${vaultName};SecretName=${digestSecretName})'
}

var appSettings = union(settingsCore, isFlex ? {} : settingsPremium, source == 'blob' ? settingsBlobSource : settingsSharePointSource, useBot ? settingsTeamsBot : {}, useEmail ? settingsEmail : {}, useWorkflows ? settingsWorkflows : {}, useDigest ? settingsDigest : {})


// The bot only sends (proactive 1:1 messages): no messaging endpoint. Its app id is the
// managed identity's client id; the Bot Connector accepts that identity's tokens.
resource bot 'Microsoft.BotService/botServices@2022-09-15' = if (useBot) {
  name: botName
  location: 'global'
  tags: tags
  kind: 'azurebot'
  sku: {
    name: 'F0'
  }
  properties: {
    displayName: 'Lookout reminders'
    endpoint: ''
    msaAppId: identity.properties.clientId
    msaAppType: 'UserAssignedMSI'
    msaAppMSIResourceId: identity.id
    msaAppTenantId: tenant().tenantId
    disableLocalAuth: true
  }
}

resource teamsChannel 'Microsoft.BotService/botServices/channels@2022-09-15' = if (useBot) {
  parent: bot
  name: 'MsTeamsChannel'
  location: 'global'
  properties: {
    channelName: 'MsTeamsChannel'
    properties: {
      isEnabled: true
    }
  }
}

output functionAppName string = functionApp.name
output functionAppHostName string = functionApp.properties.defaultHostName
output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output storageAccountName string = storage.name
output exportsContainer string = source == 'blob' ? exportsContainerName : ''
output botName string = useBot ? botName : ''
